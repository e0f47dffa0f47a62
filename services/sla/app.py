"""SLA's composition root."""

from __future__ import annotations

from services.sla.deadlines import SlaState, load_policy
from services.sla.engine import SlaEngine
from services.sla.erasure import SlaErasure
from services.sla.gcpause import GcPause
from services.sla.metrics import SlaMetrics
from services.sla.store import JOURNAL, MongoSlaStore, SlaStore
from shared.contracts.erasures import ErasureEvent
from shared.contracts.tickets import TicketEvent
from shared.engine import EngineEdges, host_engine
from shared.journal import BrokerOutput, Output, ProducerOutput
from shared.service import ServiceApp
from shared.settings import SlaSettings
from shared.topics import DEADLETTER, ERASURES, SLA, TICKETS
from shared.wiring import Given, Wiring


def build_app(
    settings: SlaSettings | None = None,
    given: Given | None = None,
    *,
    store: SlaStore | None = None,
) -> ServiceApp:
    settings = settings or SlaSettings()
    wiring = Wiring("sla", settings, given)
    edges = EngineEdges.create(wiring, settings, journal=JOURNAL, sends=(SLA, DEADLETTER))
    store = store or MongoSlaStore(wiring.db)
    wiring.indexes(store)
    # The engine's events leave through a producer of its own (a threshold's event at once,
    # no linger); a test's in-memory broker carries them instead.
    output: Output = BrokerOutput(wiring.broker)
    if not wiring.in_memory:
        producer = ProducerOutput(
            {
                "bootstrap_servers": settings.kafka_bootstrap,
                "client_id": "omniroute-sla-output",
                "acks": "all",
                "enable_idempotence": settings.kafka_idempotent_producer,
                "linger_ms": 0,
            }
        )
        wiring.startup.append(producer.start)
        wiring.shutdown.insert(0, producer.stop)  # last, after the engine has stopped
        output = producer
    engine = SlaEngine(
        state=SlaState(
            policy=load_policy(settings.policy_dir / "sla.yaml"),
            dedupe_window_s=settings.dedupe_window_s,
        ),
        store=store,
        output=output,
        metrics=SlaMetrics.create(wiring.registry),
        journal=edges.journal,
        published=edges.published,
        lease=edges.lease,
        max_fire=settings.max_fire_per_step,
        compact_interval_s=settings.compact_interval_s,
        # A process of its own (not an in-memory test): keep full collections off firing.
        gc=None if wiring.in_memory else GcPause(),
        erasure=SlaErasure(wiring.db),
    )
    host = host_engine(
        engine,
        wiring,
        edges,
        settings,
        topics=(TICKETS, ERASURES),
        payload=TicketEvent | ErasureEvent,
        description="Ticket events drive first-response, next-response and resolution timers"
        " (started, paused while waiting on the customer, met), on the lease holder; erasures"
        " anonymise the customer's timers, legal holds keep them from retention",
    )
    wiring.retention(engine.erasure.sweeps, active=lambda: host.active)
    # The engine's timer events, dead letters and erasure completions.
    return wiring.app(sends=(SLA, DEADLETTER, ERASURES), consumers=(edges.inputs,))
