"""Ingest's training consumer: agents' corrections on support.tickets become examples."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aiokafka import ConsumerRecord
from prometheus_client import CollectorRegistry

from services.ingest.handlers import Teacher
from services.ingest.metrics import IngestMetrics
from services.ingest.store import ClassifiedText
from shared.contracts.tickets import ticket_event_type
from tests.support.factories import ticket_event
from tests.support.fakes import FakeTrainingStore

NOW = datetime(2026, 12, 7, tzinfo=UTC)


def record(offset: int, event: Any, value: bytes) -> ConsumerRecord[bytes, bytes]:
    headers: list[tuple[str, Any]] = [
        ("ce_type", ticket_event_type(event).encode()),
        ("ce_id", f"evt-{offset}".encode()),
    ]
    return ConsumerRecord(
        topic="support.tickets",
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"tkt_1",
        value=value,
        checksum=None,
        serialized_key_size=5,
        serialized_value_size=len(value),
        headers=headers,
    )


async def test_a_correction_becomes_an_example_and_the_rest_is_skipped_or_dead() -> None:
    texts = FakeTrainingStore()
    await texts.remember([ClassifiedText("msg_1", "is BEP20 supported?", "en", "general", NOW)])
    teacher = Teacher(texts=texts, metrics=IngestMetrics.create(CollectorRegistry()))
    corrected = ticket_event("recategorized", 3, category="deposit", message_id="msg_1")
    corrected = corrected.model_copy(update={"agent_id": "alice"})

    dead = await teacher.process(
        [
            # Other ticket events, even malformed ones, are other consumers' business.
            record(1, "opened", ticket_event("opened").model_dump_json().encode()),
            record(2, "opened", b"{not json"),
            record(3, "recategorized", corrected.model_dump_json().encode()),
            record(4, "recategorized", json.dumps({"ticket_id": "tkt_2"}).encode()),
        ]
    )

    [example] = await texts.examples()
    assert (example["_id"], example["text"], example["predicted"], example["category"]) == (
        "tkt_1",
        "is BEP20 supported?",
        "general",
        "deposit",
    )
    assert example["agent_id"] == "alice"
    [letter] = [json.loads(d.value) for d in dead]
    assert (letter["service"], letter["reason"], letter["source_offset"]) == (
        "ingest",
        "invalid ticket event",
        4,
    )
