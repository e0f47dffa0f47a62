"""SLA and notify apps' Kafka wiring, in memory (TestKafkaBroker) with fake stores."""

from __future__ import annotations

from typing import Any

import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from pymongo import AsyncMongoClient

from services.notify.app import build_app as notify_app
from services.notify.handlers import Notifier
from services.router.handlers import ticket_event
from services.sla.app import build_app as sla_app
from shared.events import publish_all
from shared.settings import NotifySettings, SlaSettings
from shared.topics import DEADLETTER, NOTIFICATIONS, SLA, TICKETS
from tests.support.factories import ticket_event as make_ticket_event
from tests.support.fakes import FakeNotificationStore, FakeSlaStore, HeldLease


async def test_opened_ticket_starts_timers_and_redelivery_does_not() -> None:
    broker = KafkaBroker("127.0.0.1:1")
    store = FakeSlaStore()
    sla_app(
        SlaSettings(kafka_create_topics=False),
        broker=broker,
        inputs=broker,
        lease=HeldLease(),  # type: ignore[arg-type]
        mongo=AsyncMongoClient(connect=False),
        store=store,
    )
    seen: list[dict[str, Any]] = []

    @broker.subscriber(SLA)
    async def capture(body: dict[str, Any]) -> None:
        seen.append(body)

    opened = ticket_event(make_ticket_event("opened", 1, priority="P1"))
    async with TestKafkaBroker(broker) as br:
        await publish_all(br, [opened])
        await publish_all(br, [opened])  # redelivered
        await publish_all(br, [ticket_event(make_ticket_event("agent_replied", 2, priority="P1"))])
    assert [(e["event"], e["metric"]) for e in seen] == [
        ("started", "first_response"),
        ("started", "resolution"),
        ("met", "first_response"),
    ]
    assert {t.metric: t.state for t in store.timers.values()} == {
        "first_response": "met",
        "resolution": "running",
    }
    assert store.progress == {"tkt_1": 2}


async def test_acknowledgement_once_per_ticket_and_poison_dead_lettered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def no_codes(self: Any, ids: set[str]) -> dict[str, str]:
        return {}

    # No customer has an anti-phishing code here (no MongoDB behind this test).
    monkeypatch.setattr(Notifier, "_anti_phishing_codes", no_codes)
    broker = KafkaBroker("127.0.0.1:1")
    store = FakeNotificationStore()
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(connect=False)
    app = notify_app(
        NotifySettings(kafka_create_topics=False), broker=broker, mongo=mongo, store=store
    )
    assert app is not None
    announced: list[dict[str, Any]] = []
    dead: list[dict[str, Any]] = []

    @broker.subscriber(NOTIFICATIONS)
    async def capture(body: dict[str, Any]) -> None:
        announced.append(body)

    @broker.subscriber(DEADLETTER)
    async def capture_dead(body: dict[str, Any]) -> None:
        dead.append(body)

    opened = ticket_event(
        make_ticket_event("opened", 1, language="zh", category="secret_exposed", priority="P1")
    )
    async with TestKafkaBroker(broker) as br:
        await publish_all(br, [opened])
        await publish_all(br, [opened])
        await br.publish(b"[]", TICKETS, headers={"ce_type": "omniroute.ticket.opened.v1"})
    [doc] = store.docs.values()
    assert doc["language"] == "zh"
    assert doc["template"] == "acknowledgement_secret_exposed"
    assert "新钱包" in doc["text"]
    assert "助记词" in doc["text"]  # the anti-scam line, in Chinese
    # Announced each time (same id, consumers dedupe), stored once.
    assert {a["notification_id"] for a in announced} == {doc["_id"]}
    assert [d["reason"] for d in dead] == ["invalid ticket event"]
