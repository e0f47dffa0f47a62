"""The router app's Kafka wiring, in memory: FastStream's TestKafkaBroker and a fake store."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient

from services.router.app import build_app
from services.router.engine import RouterEngine
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
from shared.contracts.messages import MESSAGE_RECEIVED
from shared.contracts.sla import sla_event_type
from shared.events import OutboundEvent, make_event, publish_all
from shared.ids import event_id
from shared.journal import BrokerOutput, Marks, MemoryJournal, NoPublishedLog, PublishedLog
from shared.settings import REPO_POLICY_DIR, RouterSettings
from shared.topics import AGENTS, DEADLETTER, MESSAGES, SLA, TICKETS
from shared.wiring import Given
from tests.support.factories import T0, message_event, sla_event
from tests.support.fakes import FakeRouterStore, HeldLease, record_of
from tests.support.kafka import captured
from tests.support.waiting import await_until


async def test_message_in_ticket_events_out() -> None:
    settings = RouterSettings(kafka_create_topics=False)
    broker = KafkaBroker(settings.kafka_bootstrap)
    store, journal = FakeRouterStore(), MemoryJournal()
    # The client never connects: the fake store stands in for MongoDB.
    build_app(
        settings,
        Given(
            broker=broker,
            inputs=broker,
            mongo=AsyncMongoClient(connect=False),
            lease=HeldLease(),
            journal=journal,
        ),
        store=store,
    )
    seen = captured(broker, TICKETS)
    dead = captured(broker, DEADLETTER)

    async with TestKafkaBroker(broker) as br:
        profile = AgentProfile(name="A", auto_accept=True)
        await publish_all(
            br,
            [
                make_event(
                    AgentProfileUpdated(agent_id="a1", profile=profile, at=T0),
                    topic=AGENTS,
                    event_type=AGENT_PROFILE_UPDATED,
                    event_id="e1",
                    source="t",
                    key="a1",
                    time=T0,
                ),
                make_event(
                    AgentPresenceChanged(agent_id="a1", status="online", at=T0),
                    topic=AGENTS,
                    event_type=AGENT_PRESENCE_CHANGED,
                    event_id="e2",
                    source="t",
                    key="a1",
                    time=T0,
                ),
            ],
        )
        await publish_all(br, [message_event(7, category="deposit")])
        # A poison message between good ones: dead-lettered, nothing else disturbed.
        await br.publish(
            b"{not json", MESSAGES, headers={"ce_type": MESSAGE_RECEIVED, "ce_id": "poison-1"}
        )

    assert [e["event"] for e in seen] == ["opened", "assigned"]
    assert seen[1]["agent_id"] == "a1"
    assert seen[1]["priority"] == "P2"
    assert len(dead) == 1
    assert dead[0]["service"] == "router"
    assert dead[0]["reason"] == "invalid message event"
    ticket = next(iter(store.tickets.values()))
    assert ticket["state"] == "assigned"
    # Journaled, stored, published, then forgotten (in bulk, in the background).
    await forgotten(journal)
    assert json.loads(json.dumps(ticket["decision"]))["chosen"] == "a1"


# -- the engine's clock and its inputs, in memory --------------------------------------


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


def agent_events(aid: str, *, auto: bool) -> list[OutboundEvent]:
    profile = AgentProfile(name=aid, capacity={"chat": 1}, auto_accept=auto)
    return [
        make_event(
            AgentProfileUpdated(agent_id=aid, profile=profile, at=T0),
            topic=AGENTS,
            event_type=AGENT_PROFILE_UPDATED,
            event_id=f"p-{aid}",
            source="t",
            key=aid,
            time=T0,
        ),
        make_event(
            AgentPresenceChanged(agent_id=aid, status="online", at=T0),
            topic=AGENTS,
            event_type=AGENT_PRESENCE_CHANGED,
            event_id=f"o-{aid}",
            source="t",
            key=aid,
            time=T0,
        ),
    ]


async def forgotten(journal: MemoryJournal) -> None:
    async def empty() -> bool:
        return not journal.entries

    await await_until(empty, 10, "published journal entries forgotten")


@dataclass
class TopicIds:
    """support.tickets as a new lease holder reads it back: the ids published on it."""

    ids: set[str] = field(default_factory=set)

    async def end_offsets(self) -> Marks:
        return {(TICKETS, 0): 0}

    async def ids_since(self, marks: Marks) -> set[str]:
        return set(self.ids)


def new_engine(
    broker: KafkaBroker,
    store: FakeRouterStore,
    clock: Clock,
    journal: MemoryJournal | None = None,
    published: PublishedLog | None = None,
) -> RouterEngine:
    return RouterEngine(
        state=RouterState(load_policy(REPO_POLICY_DIR / "routing.yaml")),
        store=store,
        journal=journal or MemoryJournal(),
        output=BrokerOutput(broker),
        metrics=RouterMetrics.create(CollectorRegistry()),
        published=published or NoPublishedLog(),
        lease=HeldLease(),
        clock=clock,
    )


async def test_the_clock_expires_offers_through_journal_then_publish(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = KafkaBroker("localhost:9092")
    seen: list[tuple[str, dict[str, Any]]] = []

    @broker.subscriber(TICKETS)
    async def capture(body: dict[str, Any], msg: KafkaMessage) -> None:
        seen.append((str(msg.headers["ce_id"]), body))

    store, clock, journal = FakeRouterStore(), Clock(), MemoryJournal()
    async with TestKafkaBroker(broker) as br:
        engine = new_engine(br, store, clock, journal)
        records = [record_of(e) for e in [*agent_events("a1", auto=False), message_event(1)]]
        await engine.process(records)
        assert [b["event"] for _, b in seen] == ["opened", "offered"]
        tid = seen[0][1]["ticket_id"]
        assert not engine.due()
        assert await engine.tick() == 0

        # Due: the expiry is journaled before it is published (and folded into the store
        # after). Publishing fails.
        clock.now = T0 + timedelta(seconds=31)
        assert engine.due()
        await forgotten(journal)  # published steps are forgotten (in bulk, in the background)

        async def broken(*args: Any, **kwargs: Any) -> int:
            raise ConnectionError("broker away")

        monkeypatch.setattr(engine.output, "send", broken)
        with pytest.raises(ConnectionError):
            await engine.tick()
        assert [e.type for entry in journal.entries for e in entry.events] == [
            "omniroute.ticket.offer_expired.v1",
            "omniroute.ticket.offered.v1",  # a1 is the only agent: back to a1
        ]
        assert store.tickets[tid]["passed_by"] == []  # not folded: the journal holds it
        monkeypatch.undo()

        # The next tick reloads (folding the journal in) and publishes what was journaled,
        # same id.
        clock.now += timedelta(seconds=1)
        await engine.tick()
        await forgotten(journal)
        assert store.tickets[tid]["passed_by"] == ["a1"]
        after = [(eid, b["event"]) for eid, b in seen[2:]]
        assert after == [
            (event_id("ticket", tid, "3"), "offer_expired"),
            (event_id("ticket", tid, "4"), "offered"),
        ]
        assert seen[2][1]["reasons"] == ["not accepted within 30s"]
        # Nothing fires twice: the reloaded timers know the first offer is gone.
        assert await engine.tick() == 0
        assert len(seen) == 4


async def test_a_failed_save_reloads_and_the_redelivered_batch_applies_once() -> None:
    broker = KafkaBroker("localhost:9092")
    seen = captured(broker, TICKETS)
    on_topic = TopicIds()

    @broker.subscriber(TICKETS)
    async def ids(body: dict[str, Any], msg: KafkaMessage) -> None:
        on_topic.ids.add(str(msg.headers["ce_id"]))

    store, clock = FakeRouterStore(), Clock()
    async with TestKafkaBroker(broker) as br:
        engine = new_engine(br, store, clock, published=on_topic)
        await engine.process([record_of(e) for e in agent_events("a1", auto=True)])
        batch = [record_of(message_event(n)) for n in (1, 2)]
        store.fail_next_save = True
        with pytest.raises(ConnectionError):
            await engine.process(batch)
        # Journaled and published; the fold into the store failed.
        assert [b["event"] for b in seen] == ["opened", "opened", "assigned", "queued"]
        assert store.tickets == {}
        # Kafka redelivers the batch (NACK); memory is rebuilt from the store and the
        # journal first (the topic has the journaled events: none is published again).
        await engine.process(batch)
        await engine.process(batch)  # and once more: recognised, nothing new
    assert [(b["event"], b["sequence"]) for b in seen] == [
        ("opened", 1),
        ("opened", 1),
        ("assigned", 2),
        ("queued", 2),
    ]
    assert store.agents["a1"]["load"] == {"chat": 1}
    assert [b["position"] for b in seen] == [1, 2, 3, 4]


async def test_an_sla_breach_on_support_sla_escalates_the_ticket() -> None:
    broker = KafkaBroker("localhost:9092")
    seen = captured(broker, TICKETS)

    store, clock = FakeRouterStore(), Clock()
    async with TestKafkaBroker(broker) as br:
        engine = new_engine(br, store, clock)
        await engine.process([record_of(message_event(1, category="withdrawal"))])
        tid = seen[0]["ticket_id"]
        breach = sla_event(timer_id="tmr_x", ticket_id=tid, elapsed_s=180, target_s=180)
        sla_record = record_of(
            make_event(
                breach,
                topic=SLA,
                event_type=sla_event_type("breached"),
                event_id="sla-1",
                source="omniroute/sla",
                key=tid,
                time=T0,
            )
        )
        await engine.process([sla_record])
        await engine.process([sla_record])  # redelivered
    escalated = [b for b in seen if b["event"] == "escalated"]
    assert len(escalated) == 1
    assert (escalated[0]["priority"], escalated[0]["pool"]) == ("P1", "supervisor")
    assert escalated[0]["reasons"] == [
        "SLA first_response breached: P2 -> P1; moved to the supervisor pool"
    ]
    assert store.tickets[tid]["priority"] == "P1"


async def test_metrics_follow_the_engine() -> None:
    broker = KafkaBroker("localhost:9092")
    registry = CollectorRegistry()
    store, clock = FakeRouterStore(), Clock()
    async with TestKafkaBroker(broker) as br:
        engine = new_engine(br, store, clock)
        engine.metrics = RouterMetrics.create(registry)
        clock.now = T0 + timedelta(seconds=2)  # two seconds after the messages' arrival
        await engine.process([record_of(e) for e in agent_events("a1", auto=False)])
        await engine.process([record_of(message_event(n, category="kyc")) for n in (1, 2)])
        clock.now = T0 + timedelta(seconds=60)
        await engine.tick()  # the offer expires, back to a1 (nobody else), P3 waits on

    def value(name: str, **labels: str) -> float:
        got = registry.get_sample_value(name, labels)
        assert got is not None, (name, labels)
        return got

    assert value("omniroute_router_queue_depth", priority="P3") == 1
    assert value("omniroute_router_tickets", state="offered", priority="P3") == 1
    assert value("omniroute_router_oldest_waiting_seconds", priority="P3") == 58
    assert value("omniroute_router_agents", presence="online") == 1
    assert value("omniroute_router_capacity_utilisation_ratio", channel="chat") == 1
    labels = {"priority": "P3", "channel": "chat"}
    assert value("omniroute_router_time_to_offer_seconds_count", **labels) == 2
    assert value("omniroute_router_time_to_offer_seconds_sum", **labels) == 2 + 60
    assert value("omniroute_router_offers_expired_total", channel="chat", reason="timeout") == 1
    # Three steps were journaled, published and folded (two batches and the tick); the two
    # batches waited for the engine's lock.
    for phase in ("decide", "journal", "publish", "fold"):
        assert value("omniroute_router_step_seconds_count", phase=phase) == 3, phase
    assert value("omniroute_router_step_seconds_count", phase="lock_wait") == 2


def test_every_step_phase_is_exported_from_the_start() -> None:
    registry = CollectorRegistry()
    RouterMetrics.create(registry)

    for phase in ("lock_wait", "decide", "journal", "publish", "fold"):
        assert (
            registry.get_sample_value("omniroute_router_step_seconds_count", {"phase": phase}) == 0
        )
