"""Router's composition root."""

from __future__ import annotations

from services.router.engine import RouterEngine
from services.router.erasure import RouterErasure
from services.router.http import make_routes
from services.router.lookahead import read_ahead
from services.router.metrics import RouterMetrics
from services.router.priority import load_policy
from services.router.state import RouterState
from services.router.store import JOURNAL, MongoRouterStore, RouterStore
from shared.contracts.agents import AgentEvent
from shared.contracts.erasures import ErasureEvent
from shared.contracts.messages import MessageReceived
from shared.contracts.sla import SlaEvent
from shared.engine import EngineEdges, host_engine
from shared.journal import BrokerOutput
from shared.service import ServiceApp
from shared.settings import RouterSettings
from shared.topics import AGENTS, DEADLETTER, ERASURES, MESSAGES, SLA, TICKETS
from shared.wiring import Given, Wiring


def build_app(
    settings: RouterSettings | None = None,
    given: Given | None = None,
    *,
    store: RouterStore | None = None,
) -> ServiceApp:
    settings = settings or RouterSettings()
    # No linger on what the router publishes (the engine's events, the API's agent
    # actions): the P1 path pays no batching wait, and a step's events batch anyway.
    wiring = Wiring("router", settings, given, linger_ms=0)
    # `wiring.broker` publishes (and serves the API) on every replica; the engine's inputs
    # are consumed only on the replica that holds the lease.
    edges = EngineEdges.create(wiring, settings, journal=JOURNAL, sends=(TICKETS, DEADLETTER))
    store = store or MongoRouterStore(wiring.db)
    wiring.indexes(store)
    engine = RouterEngine(
        state=RouterState(policy=load_policy(settings.policy_dir / "routing.yaml")),
        store=store,
        journal=edges.journal,
        output=BrokerOutput(wiring.broker),
        metrics=RouterMetrics.create(wiring.registry),
        published=edges.published,
        lease=edges.lease,
        erasure=RouterErasure(wiring.db),
    )
    host = host_engine(
        engine,
        wiring,
        edges,
        settings,
        topics=(MESSAGES, AGENTS, SLA, ERASURES),
        payload=MessageReceived | AgentEvent | SlaEvent | ErasureEvent,
        description="Customer messages (support.messages), agent profiles, presence and"
        " actions (support.agents), SLA warnings and breaches (support.sla) and erasures"
        " and legal holds (support.erasures), applied in order to one matching engine on"
        " the lease holder",
    )
    wiring.retention(engine.erasure.sweeps, active=lambda: host.active)
    # P1 messages applied ahead of a surge, on the lease holder, through the engine's step.
    ahead = read_ahead(
        settings,
        engine,
        host.may_act,
        wiring.registry,
        "omniroute-router",
        enabled=edges.own_inputs,
    )
    wiring.startup.append(ahead.start)  # idle until this replica holds the lease
    wiring.shutdown.insert(0, ahead.stop)  # last: idle once the host gave the lease up
    routes = make_routes(settings, wiring.broker, store, access=wiring.access(), engine=engine)
    # The engine's ticket events, dead letters and erasure completions; the API's actions.
    return wiring.app(
        routes, sends=(TICKETS, DEADLETTER, AGENTS, ERASURES), consumers=(edges.inputs,)
    )
