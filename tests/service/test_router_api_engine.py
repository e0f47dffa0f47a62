"""The router's API on the lease holder asks its engine: an agent action is checked against
the engine's memory (no store read), applied as soon as Kafka has it when it is next in its
partition, and a ticket read between a step's publish and its fold shows the journaled
document. Elsewhere (no lease) the API reads the collections as before."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx
from faststream.kafka import KafkaBroker, TestKafkaBroker
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from services.router.engine import RouterEngine
from services.router.http import make_routes
from services.router.metrics import RouterMetrics
from services.router.priority import load_policy
from services.router.state import RouterState
from shared.contracts.agents import (
    AGENT_PRESENCE_CHANGED,
    AGENT_PROFILE_UPDATED,
    AgentPresenceChanged,
    AgentProfile,
    AgentProfileUpdated,
)
from shared.events import OutboundEvent, make_event
from shared.journal import BrokerOutput, MemoryJournal
from shared.settings import REPO_POLICY_DIR, RouterSettings
from shared.topics import AGENTS, TICKETS
from tests.support.access import memory_access
from tests.support.factories import T0, message_event
from tests.support.fakes import FakeRouterStore, HeldLease, record_of
from tests.support.kafka import captured
from tests.support.waiting import await_until

AUTH = {"Authorization": "Bearer dev-token"}


@dataclass(frozen=True)
class Landed:
    """What Kafka acknowledges for a record (aiokafka's RecordMetadata, the fields used)."""

    topic: str
    partition: int
    offset: int
    timestamp: int = 0


@dataclass
class AgentsTopic:
    """support.agents as the API's broker sees it: each record lands at the next offset."""

    next_offset: int
    sent: list[OutboundEvent] = field(default_factory=list)

    async def publish(
        self, value: bytes, topic: str, *, key: bytes | None, headers: dict[str, str], **_: Any
    ) -> asyncio.Future[Any]:
        self.sent.append(OutboundEvent(topic, key.decode() if key else None, value, headers))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(Landed(topic, 0, self.next_offset))
        self.next_offset += 1
        return done


class LostLease(HeldLease):
    def valid(self) -> bool:
        return False


@dataclass
class SlowFoldStore(FakeRouterStore):
    """Folds only when let: the time between a step's publish and its fold, held open."""

    let_fold: asyncio.Event = field(default_factory=asyncio.Event)
    hold: bool = False

    async def fold(self, changes: dict[str, list[dict[str, Any]]]) -> None:
        if self.hold:
            await self.let_fold.wait()
        await super().fold(changes)


def agent_records(aid: str) -> list[Any]:
    """Profile (one chat, auto-accept) and presence online, at offsets 0 and 1."""
    profile = AgentProfile(name=aid, capacity={"chat": 1}, auto_accept=True)
    events = [
        (AgentProfileUpdated(agent_id=aid, profile=profile, at=T0), AGENT_PROFILE_UPDATED),
        (AgentPresenceChanged(agent_id=aid, status="online", at=T0), AGENT_PRESENCE_CHANGED),
    ]
    return [
        record_of(
            make_event(
                data,
                topic=AGENTS,
                event_type=t,
                event_id=f"{aid}-{n}",
                source="t",
                key=aid,
                time=T0,
            ),
            offset=n,
        )
        for n, (data, t) in enumerate(events)
    ]


async def assigned_chat(engine: RouterEngine, seen: list[dict[str, Any]]) -> str:
    """Agent a1 online, then a chat that is assigned to it: the ticket's id."""
    await engine.process([*agent_records("a1"), record_of(message_event(1))])
    [tid] = {e["ticket_id"] for e in seen}
    return tid


def new_engine(broker: KafkaBroker, store: FakeRouterStore, lease: HeldLease) -> RouterEngine:
    return RouterEngine(
        state=RouterState(load_policy(REPO_POLICY_DIR / "routing.yaml")),
        store=store,
        journal=MemoryJournal(),
        output=BrokerOutput(broker),
        metrics=RouterMetrics.create(CollectorRegistry()),
        lease=lease,
    )


def api(engine: RouterEngine, store: FakeRouterStore, topic: AgentsTopic) -> httpx.AsyncClient:
    settings = RouterSettings()
    access, _ = memory_access(settings)
    routes = make_routes(settings, topic, store, access=access, engine=engine)  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=Starlette(routes=routes))
    return httpx.AsyncClient(transport=transport, base_url="http://router")


async def test_the_lease_holder_checks_an_action_in_memory_and_applies_it_at_once() -> None:
    broker = KafkaBroker("localhost:9092")
    seen = captured(broker, TICKETS)
    store = FakeRouterStore()
    async with TestKafkaBroker(broker) as br:
        engine = new_engine(br, store, HeldLease())
        tid = await assigned_chat(engine, seen)
        assert seen[-1]["event"] == "assigned"
        # The collections say otherwise (as if the fold were behind): the engine decides.
        store.tickets[tid] = {**store.tickets[tid], "state": "queued", "agent_id": None}
        topic = AgentsTopic(next_offset=2)
        async with api(engine, store, topic) as client:
            reply = await client.post(
                f"/v1/tickets/{tid}/resolve", json={"agent_id": "a1"}, headers=AUTH
            )
            assert reply.status_code == 202
            eid = reply.json()["event_id"]
            # Applied by the time the call returned: no input consumer ran.
            assert seen[-1]["event"] == "resolved"
            status = await client.get(f"/v1/actions/{eid}", headers=AUTH)
            assert status.json()["status"] == "accepted"
            # A second resolve is refused from memory: the ticket is resolved.
            again = await client.post(
                f"/v1/tickets/{tid}/resolve", json={"agent_id": "a1"}, headers=AUTH
            )
            assert again.status_code == 409
            assert again.json()["error"] == "ticket already resolved"
        # The input consumer reaches the action later: recognised, not applied twice, and
        # its recorded outcome stays.
        events_before = len(seen)
        await engine.process([record_of(topic.sent[0], offset=2)])
        assert len(seen) == events_before
        assert [e["event"] for e in seen].count("resolved") == 1
        assert store.actions[eid]["status"] == "accepted"


async def test_an_action_behind_unapplied_records_waits_for_the_consumer() -> None:
    broker = KafkaBroker("localhost:9092")
    seen = captured(broker, TICKETS)
    store = FakeRouterStore()
    async with TestKafkaBroker(broker) as br:
        engine = new_engine(br, store, HeldLease())
        tid = await assigned_chat(engine, seen)
        # Offsets 2-4 of the agent's partition are not applied yet: order per agent holds.
        topic = AgentsTopic(next_offset=5)
        async with api(engine, store, topic) as client:
            reply = await client.post(
                f"/v1/tickets/{tid}/resolve", json={"agent_id": "a1"}, headers=AUTH
            )
        assert reply.status_code == 202
        assert "resolved" not in [e["event"] for e in seen]
        await engine.process([record_of(topic.sent[0], offset=5)])
        assert seen[-1]["event"] == "resolved"


async def test_a_read_between_publish_and_fold_shows_the_journaled_ticket() -> None:
    broker = KafkaBroker("localhost:9092")
    seen = captured(broker, TICKETS)
    store = SlowFoldStore()
    async with TestKafkaBroker(broker) as br:
        engine = new_engine(br, store, HeldLease())
        await engine.process(agent_records("a1"))
        store.hold = True
        step = asyncio.create_task(engine.process([record_of(message_event(1))]))

        async def published() -> bool:
            return any(e["event"] == "assigned" for e in seen)

        await await_until(published, 5, "the step's events published")
        [tid] = {e["ticket_id"] for e in seen}
        assert tid not in store.tickets  # not folded yet
        async with api(engine, store, AgentsTopic(next_offset=2)) as client:
            ticket = (await client.get(f"/v1/tickets/{tid}", headers=AUTH)).json()
            assert (ticket["state"], ticket["agent_id"]) == ("assigned", "a1")
            listed = (await client.get("/v1/tickets?state=assigned", headers=AUTH)).json()
            assert [t["ticket_id"] for t in listed["tickets"]] == [tid]
            agent = (await client.get("/v1/agents/a1", headers=AUTH)).json()
            assert agent["tickets"] == [tid]
        store.let_fold.set()
        await step
        assert store.tickets[tid]["state"] == "assigned"
        assert engine.unfolded == {}


async def test_without_the_lease_the_api_reads_the_collections() -> None:
    broker = KafkaBroker("localhost:9092")
    seen = captured(broker, TICKETS)
    store = FakeRouterStore()
    lease = HeldLease()
    async with TestKafkaBroker(broker) as br:
        engine = new_engine(br, store, lease)
        tid = await assigned_chat(engine, seen)
        store.tickets[tid] = {**store.tickets[tid], "state": "queued", "agent_id": None}
        engine.lease = LostLease()
        topic = AgentsTopic(next_offset=2)
        async with api(engine, store, topic) as client:
            reply = await client.post(
                f"/v1/tickets/{tid}/resolve", json={"agent_id": "a1"}, headers=AUTH
            )
        # The stored ticket rules the action out; nothing was published or applied.
        assert reply.status_code == 409
        assert topic.sent == []
        assert "resolved" not in [e["event"] for e in seen]
