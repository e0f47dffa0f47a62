"""SLA app's Kafka wiring, in memory (TestKafkaBroker) with fake stores."""

from __future__ import annotations

from faststream.kafka import KafkaBroker, TestKafkaBroker
from pymongo import AsyncMongoClient

from services.router.handlers import ticket_event
from services.sla.app import build_app as sla_app
from services.sla.store import TIMERS
from shared.events import publish_all
from shared.journal import MemoryJournal, latest
from shared.settings import SlaSettings
from shared.topics import SLA
from shared.wiring import Given
from tests.support.factories import ticket_event as make_ticket_event
from tests.support.fakes import FakeSlaStore, HeldLease
from tests.support.kafka import captured


async def test_opened_ticket_starts_timers_and_redelivery_does_not() -> None:
    broker = KafkaBroker("127.0.0.1:1")
    store = FakeSlaStore()
    journal = MemoryJournal()
    sla_app(
        SlaSettings(kafka_create_topics=False),
        Given(
            broker=broker,
            inputs=broker,
            lease=HeldLease(),
            mongo=AsyncMongoClient(connect=False),
            journal=journal,
        ),
        store=store,
    )
    seen = captured(broker, SLA)

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

    # Durable: the journal holds each timer's newest version (folded into the store later,
    # when nothing falls due: these tickets' thresholds are due already).
    timers = latest(journal.entries)[TIMERS]
    assert {t["metric"]: t["state"] for t in timers} == {
        "first_response": "met",
        "resolution": "running",
    }
    assert max(t["seq"] for t in timers) == 2  # how far the ticket's events were applied


# Notify's Kafka edge is tested in tests/service/test_notify_service.py.
