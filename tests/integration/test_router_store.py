"""The router's MongoDB store on real SecantusDB: a crash at any point of a save leaves a
state the next holder loads and goes on from, deciding exactly as before."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from prometheus_client import CollectorRegistry

from services.router.engine import Changes, RouterState
from services.router.handlers import RouterEngine, ticket_event
from services.router.metrics import RouterMetrics
from services.router.priority import RoutingPolicy, load_policy
from services.router.store import MongoRouterStore
from shared.contracts.agents import AgentPresenceChanged, AgentProfile, AgentProfileUpdated
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


async def save(store: MongoRouterStore, state: RouterState, ch: Changes) -> list[Any]:
    events = [ticket_event(e) for e in ch.events]
    await store.save(ch.tickets.values(), ch.agents.values(), ["p", "o"], events, state.position)
    return events


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
    await save(store, state, ch)
    await store.clear_outbox([])

    restarted = RouterState(POLICY)
    assert await store.load(restarted, T0 - timedelta(days=1)) == []
    assert summary(restarted) == summary(state)
    assert restarted.reconcile_loads() == {}
    # The clock goes on from the stored offer: both expire it the same way.
    later = T0 + timedelta(seconds=31)
    assert [e.model_dump() for e in restarted.tick(later).events] == [
        e.model_dump() for e in state.tick(later).events
    ]


async def test_a_crash_after_the_outbox_entry_is_completed_on_start(
    router_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MongoRouterStore(router_db)
    state, ch = busy_state()

    async def die(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("killed between the outbox entry and the documents")

    monkeypatch.setattr(store, "_apply", die)
    with pytest.raises(ConnectionError):
        await save(store, state, ch)
    assert await router_db.tickets.count_documents({}) == 0
    monkeypatch.undo()

    # The next holder applies the entry, then publishes its events (same ids).
    restarted = RouterState(POLICY)
    fresh = MongoRouterStore(router_db)
    pending = await fresh.load(restarted, T0 - timedelta(days=1))
    assert [e.id for e in pending] == [ticket_event(e).id for e in ch.events]
    assert summary(restarted) == summary(state)
    await fresh.clear_outbox(pending)
    assert await router_db.router_outbox.count_documents({}) == 0


async def test_a_half_written_outbox_entry_is_dropped(router_db: Any) -> None:
    store = MongoRouterStore(router_db)
    state, ch = busy_state()
    await save(store, state, ch)
    await store.clear_outbox([])
    # A later batch died while writing its entry: part 0 of 2 is there, nothing else.
    orphan = {"_id": "b:0", "batch": "b", "part": 0, "parts": 2, "seq": 1, "position": 99}
    await router_db.router_outbox.insert_one({**orphan, "tickets": [], "agents": [], "events": []})
    restarted = RouterState(POLICY)
    assert await MongoRouterStore(router_db).load(restarted, T0 - timedelta(days=1)) == []
    assert restarted.position == state.position
    assert await router_db.router_outbox.count_documents({}) == 0


async def test_takeover_corrects_agent_loads_and_publishes_what_was_pending(router_db: Any) -> None:
    store = MongoRouterStore(router_db)
    state, ch = busy_state()
    events = await save(store, state, ch)  # stored, never published, never cleared
    # A document written by an older version says a1 holds nothing.
    await router_db.agents.update_one({"_id": "a1"}, {"$set": {"load": {}, "tickets": []}})

    broker = KafkaBroker("localhost:9092")
    published: list[str] = []

    @broker.subscriber(TICKETS)
    async def capture(body: dict[str, Any]) -> None:
        published.append(body["event"])

    async with TestKafkaBroker(broker) as br:
        engine = RouterEngine(
            state=RouterState(POLICY),
            store=MongoRouterStore(router_db),
            broker=br,
            metrics=RouterMetrics.create(CollectorRegistry()),
            clock=lambda: T0,
        )
        await engine.load()
    assert published == [e.type.split(".")[2] for e in events]
    assert (await router_db.agents.find_one({"_id": "a1"}))["load"] == {"chat": 1}
    assert engine.state.agents["a1"].load == {"chat": 1}
    assert await router_db.router_outbox.count_documents({}) == 0
