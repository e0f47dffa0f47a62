"""The router's MongoDB store and journal on real SecantusDB: a crash at any point of a step
leaves a state the next holder loads and goes on from, deciding exactly as before."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from prometheus_client import CollectorRegistry

from services.router.engine import RouterEngine
from services.router.handlers import ticket_event
from services.router.metrics import RouterMetrics
from services.router.priority import RoutingPolicy, load_policy
from services.router.state import RouterState
from services.router.state.model import Changes
from services.router.store import JOURNAL, MongoRouterStore, changes_of
from shared.contracts.agents import AgentPresenceChanged, AgentProfile, AgentProfileUpdated
from shared.journal import BrokerOutput, Entry, MongoJournal
from shared.settings import REPO_POLICY_DIR
from shared.topics import TICKETS
from tests.support.factories import T0, message

pytestmark = pytest.mark.integration
POLICY: RoutingPolicy = load_policy(REPO_POLICY_DIR / "routing.yaml")


def busy_state() -> tuple[RouterState, Changes]:
    """One offering agent, a P1 on offer, a P4 and a P2 waiting."""
    state = RouterState(POLICY)
    profile = AgentProfile(name="A", capacity={"chat": 1}, auto_accept=False)
    ch = state.on_profile(AgentProfileUpdated(agent_id="a1", profile=profile, at=T0), "p", T0)
    ch.merge(
        state.on_presence(AgentPresenceChanged(agent_id="a1", status="online", at=T0), "o", T0)
    )
    ch.merge(state.on_message(message(1, category="stolen_funds", customer_id="c1"), T0))
    ch.merge(state.on_message(message(2, category="general"), T0))
    ch.merge(state.on_message(message(3, category="deposit"), T0 + timedelta(seconds=1)))
    return state, ch


def entry_of(journal: MongoJournal, state: RouterState, ch: Changes) -> Entry:
    changes = changes_of(ch.tickets.values(), ch.agents.values(), ["p", "o"], None, state.position)
    return Entry(journal.next_id(), changes, [ticket_event(e) for e in ch.events])


def engine_on(router_db: Any, broker: KafkaBroker) -> RouterEngine:
    return RouterEngine(
        state=RouterState(POLICY),
        store=MongoRouterStore(router_db),
        journal=MongoJournal(router_db, JOURNAL),
        output=BrokerOutput(broker),
        metrics=RouterMetrics.create(CollectorRegistry()),
        clock=lambda: T0,
    )


def capture_tickets(broker: KafkaBroker) -> list[str]:
    published: list[str] = []

    @broker.subscriber(TICKETS)
    async def capture(body: dict[str, Any]) -> None:
        published.append(body["event"])

    return published


def summary(state: RouterState) -> dict[str, Any]:
    return {
        "tickets": {t: (x.state, x.agent_id, x.sequence) for t, x in state.tickets.items()},
        "waiting": [t.ticket_id for t in state.waiting()],
        "loads": {a: dict(x.load) for a, x in state.agents.items()},
        "position": state.position,
        "due": state.next_due(),
        "cases": dict(state.cases),
    }


async def test_a_restart_rebuilds_queue_timers_and_position(router_db: Any) -> None:
    store = MongoRouterStore(router_db)
    await store.ensure_indexes()
    state, ch = busy_state()
    await store.fold(entry_of(MongoJournal(router_db, JOURNAL), state, ch).changes)

    restarted = RouterState(POLICY)
    await store.load(restarted, T0 - timedelta(days=1))
    assert summary(restarted) == summary(state)
    assert restarted.reconcile_loads() == {}
    # The clock goes on from the stored offer: both expire it the same way.
    later = T0 + timedelta(seconds=31)
    assert [e.model_dump() for e in restarted.tick(later).events] == [
        e.model_dump() for e in state.tick(later).events
    ]


async def test_a_crash_after_the_journal_entry_is_completed_on_start(router_db: Any) -> None:
    """Died after appending the step, before its documents were written or its events
    left: the next holder folds the entry, publishes its events (same ids), forgets it."""
    journal = MongoJournal(router_db, JOURNAL)
    state, ch = busy_state()
    entry = entry_of(journal, state, ch)
    await journal.append(entry)
    assert await router_db.tickets.count_documents({}) == 0

    broker = KafkaBroker("localhost:9092")
    published = capture_tickets(broker)
    async with TestKafkaBroker(broker) as br:
        engine = engine_on(router_db, br)
        await engine.load()
    assert published == [e.type.split(".")[2] for e in entry.events]
    assert summary(engine.state) == summary(state)
    assert await router_db.router_journal.count_documents({}) == 0


async def test_takeover_corrects_agent_loads_that_disagree_with_the_tickets(router_db: Any) -> None:
    state, ch = busy_state()
    await MongoRouterStore(router_db).fold(
        entry_of(MongoJournal(router_db, JOURNAL), state, ch).changes
    )
    # A document written by an older version says a1 holds nothing.
    await router_db.agents.update_one({"_id": "a1"}, {"$set": {"load": {}, "tickets": []}})

    broker = KafkaBroker("localhost:9092")
    async with TestKafkaBroker(broker) as br:
        engine = engine_on(router_db, br)
        await engine.load()
    assert engine.state.agents["a1"].load == {"chat": 1}
    assert (await router_db.agents.find_one({"_id": "a1"}))["load"] == {"chat": 1}
