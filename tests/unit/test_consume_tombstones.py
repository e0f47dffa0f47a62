"""The consumer kit and compacted topics: a null value on a topic named as compacted is a
deletion of its key, handed to the consumer in record order; anywhere else it stays poison."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.consume import Contracts, Decoder
from shared.contracts.customers import CUSTOMER_UPDATED, CustomerUpdated
from shared.events import make_event
from shared.topics import CUSTOMERS, TICKETS
from tests.support.fakes import Record, record_of

NOW = datetime(2026, 12, 7, tzinfo=UTC)
CONTRACTS = Contracts({CUSTOMER_UPDATED: CustomerUpdated})


def update(version: int) -> Record:
    c = CustomerUpdated(customer_id="cus_1", version=version, at=NOW)
    event = make_event(
        c,
        topic=CUSTOMERS,
        event_type=CUSTOMER_UPDATED,
        event_id=f"c{version}",
        source="t",
        key="cus_1",
        time=NOW,
    )
    return record_of(event, offset=version)


def null(topic: str, key: bytes | None, offset: int) -> Record:
    return Record(topic=topic, value=None, key=key, offset=offset)  # type: ignore[arg-type]


def test_a_tombstone_on_a_compacted_topic_is_a_deletion_in_order() -> None:
    decoder = Decoder("notify", CONTRACTS, tombstones=frozenset({CUSTOMERS}))
    out = decoder.decode([update(1), null(CUSTOMERS, b"cus_1", 2), update(3)], NOW)
    assert [e.event.version for e in out.events] == [1, 3]  # type: ignore[attr-defined]
    [gone] = out.tombstones
    assert (gone.topic, gone.key, gone.record.offset) == (CUSTOMERS, "cus_1", 2)
    assert out.dead == []


def test_a_null_value_elsewhere_or_without_a_key_is_dead_lettered() -> None:
    reasons: list[str] = []
    decoder = Decoder(
        "notify", CONTRACTS, on_dead=reasons.append, tombstones=frozenset({CUSTOMERS})
    )
    out = decoder.decode([null(TICKETS, b"t1", 1), null(CUSTOMERS, None, 2)], NOW)
    assert out.tombstones == []
    assert reasons == ["missing ce_type", "tombstone without key"]
    # Without `tombstones` the kit reads every topic as before.
    assert Decoder("x", CONTRACTS).decode([null(CUSTOMERS, b"cus_1", 3)], NOW).tombstones == []
