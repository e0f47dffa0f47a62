"""Notify's Kafka edge in memory (TestKafkaBroker) with an in-memory store: what is recorded
for ticket, message, SLA and incident events, and what is announced."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from pymongo import AsyncMongoClient

from services.notify.app import build_app
from services.router.handlers import ticket_event
from services.sla.engine import sla_event
from shared.contracts.incidents import Affected, Incident, incident_event_type
from shared.contracts.messages import Amount, Signals
from shared.events import OutboundEvent, make_event, publish_all
from shared.settings import NotifySettings
from shared.topics import DEADLETTER, INCIDENTS, NOTIFICATIONS, TICKETS
from tests.support.factories import T0, message_event
from tests.support.factories import sla_event as make_sla_event
from tests.support.factories import ticket_event as make_ticket_event
from tests.support.fakes import FakeNotifyStore
from tests.support.kafka import captured


@dataclass
class Edge:
    broker: Any
    store: FakeNotifyStore
    announced: list[dict[str, Any]]
    dead: list[dict[str, Any]]

    async def send(self, *events: OutboundEvent) -> None:
        await publish_all(self.broker, events)


@pytest.fixture
async def edge() -> AsyncIterator[Edge]:
    broker = KafkaBroker("127.0.0.1:1")
    store = FakeNotifyStore()
    # The client never connects: the fake store stands in for MongoDB; no sender loop.
    build_app(
        NotifySettings(kafka_create_topics=False),
        broker=broker,
        mongo=AsyncMongoClient(connect=False),
        store=store,  # type: ignore[arg-type]
        start_sender=False,
    )
    announced = captured(broker, NOTIFICATIONS)
    dead = captured(broker, DEADLETTER)

    async with TestKafkaBroker(broker) as br:
        yield Edge(br, store, announced, dead)


def incident_event(inc: Incident) -> OutboundEvent:
    return make_event(
        inc,
        topic=INCIDENTS,
        event_type=incident_event_type(inc),
        event_id=f"inc-{inc.version}",
        source="t",
        key=inc.incident_id,
        time=inc.updated_at,
    )


async def test_acknowledgement_once_per_ticket_and_poison_dead_lettered(edge: Edge) -> None:
    opened = ticket_event(
        make_ticket_event("opened", 1, language="zh", category="secret_exposed", priority="P1")
    )
    edge.store.codes["cus_1"] = "OWL-7731"
    await edge.send(opened)
    await edge.send(opened)  # redelivered
    poison = {"ce_type": "omniroute.ticket.opened.v1", "ce_id": "poison-1"}
    await edge.broker.publish(b"[]", TICKETS, headers=poison)
    [doc] = edge.store.docs.values()
    assert (doc["language"], doc["template"], doc["status"]) == (
        "zh",
        "acknowledgement_secret_exposed",
        "pending",
    )
    assert "新钱包" in doc["text"]
    assert "OWL-7731" in doc["text"]
    assert doc["text"].endswith("也绝不会在社交媒体上主动联系您。")
    # P1 chat: the SLA policy's 60 s first-response target.
    assert "约 1 分钟内" in doc["text"]
    # Announced each time (same id, consumers dedupe), stored once.
    assert {a["notification_id"] for a in edge.announced} == {doc["_id"]}
    assert {a["status"] for a in edge.announced} == {"recorded"}
    assert [d["reason"] for d in edge.dead] == ["invalid ticket event"]


async def test_expected_time_grows_with_the_queue_ahead(edge: Edge) -> None:
    for n in range(30):
        await edge.send(
            ticket_event(make_ticket_event("opened", 1, ticket_id=f"q{n}", priority="P2"))
        )
    await edge.send(ticket_event(make_ticket_event("opened", 1, ticket_id="late", priority="P3")))
    # 30 P2 tickets queued ahead at 60 s each: 30 minutes, more than the P3 chat target.
    assert "within about 30 minutes" in edge.store.of("late")["acknowledgement"]["text"]
    assert "within about 3 minutes" in edge.store.of("q0")["acknowledgement"]["text"]


async def test_sla_breach_brings_an_apology_with_a_new_estimate(edge: Edge) -> None:
    await edge.send(ticket_event(make_ticket_event("opened", 1, language="zh")))
    breach = make_sla_event("breached")
    await edge.send(sla_event(breach))
    await edge.send(sla_event(breach))
    apology = edge.store.of("tkt_1")["sla_breached:tmr_1"]
    assert "非常抱歉" in apology["text"]
    assert "约 8 分钟内" in apology["text"]  # half the 900 s target again, rounded up


async def test_incident_updates_matching_open_tickets_once_and_again_at_resolution(
    edge: Edge,
) -> None:
    # Three open tickets: a BTC withdrawal, an ETH withdrawal, a deposit.
    for n, (category, asset) in enumerate(
        [("withdrawal", "BTC"), ("withdrawal", "ETH"), ("deposit", "BTC")]
    ):
        await edge.send(
            message_event(
                n,
                conversation_id=f"cnv_{n}",
                category=category,
                signals=Signals(amounts=(Amount(value=1, asset=asset),)),
            ),
            ticket_event(
                make_ticket_event(
                    "opened", 1, ticket_id=f"t{n}", conversation_id=f"cnv_{n}", category=category
                )
            ),
        )
    inc = Incident(
        incident_id="inc_1",
        status="investigating",
        severity="major",
        title={"en": "BTC withdrawals delayed", "zh": "BTC 提现延迟"},
        body={"en": "Network congestion."},
        affected=Affected(categories=("withdrawal",), assets=("BTC",)),
        version=1,
        created_at=T0,
        updated_at=T0,
    )
    await edge.send(incident_event(inc))
    await edge.send(incident_event(inc.model_copy(update={"status": "identified", "version": 2})))
    assert set(edge.store.of("t0")) == {"acknowledgement", "incident:inc_1:open"}
    assert "BTC withdrawals delayed" in edge.store.of("t0")["incident:inc_1:open"]["text"]
    assert set(edge.store.of("t1")) == {"acknowledgement"}
    assert set(edge.store.of("t2")) == {"acknowledgement"}
    assert edge.store.links == {("inc_1", "t0")}

    # A new BTC withdrawal ticket hears about the incident in its acknowledgement.
    await edge.send(
        message_event(
            9,
            conversation_id="cnv_9",
            signals=Signals(amounts=(Amount(value=2, asset="BTC"),)),
        ),
        ticket_event(
            make_ticket_event(
                "opened", 1, ticket_id="t9", conversation_id="cnv_9", category="withdrawal"
            )
        ),
    )
    ack = edge.store.of("t9")["acknowledgement"]
    assert "Known issue — BTC withdrawals delayed: Network congestion." in ack["text"]
    assert edge.store.of("t9")["incident:inc_1:open"]["status"] == "merged"
    assert ("inc_1", "t9") in edge.store.links

    # Resolved: one more update to each linked ticket, and a stale redelivery changes nothing.
    resolved = inc.model_copy(update={"status": "resolved", "version": 3, "resolved_at": T0})
    await edge.send(incident_event(resolved))
    await edge.send(incident_event(inc))
    resolutions = {
        d["ticket_id"] for d in edge.store.docs.values() if d["cause"] == "incident:inc_1:resolved"
    }
    assert resolutions == {"t0", "t9"}
    incident_docs = [d for d in edge.store.docs.values() if d["incident_id"] == "inc_1"]
    assert len(incident_docs) == 4  # t0 and t9: one update (t9's merged) and one resolution
    assert [a["status"] for a in edge.announced if a["notification_id"] in edge.store.docs]
