"""One provider message delivered twice is one message downstream: one event id, one ticket.

Adapters publish at least once and providers retry webhooks, so the same payload reaches
ingest again: right after the first copy (one batch), or long after it was processed.
Every shape of every channel is delivered twice each way. To know the copy has gone all
the way through without sleeping, a marker follows it: the customer's next message in
the same conversation, sent the same way (same topic and key, or the same webhook), so it
is behind the copy on the inbound partition and, keyed by conversation, on the
`support.messages` partition. Once the ticket lists the marker, the router has seen the
copy too.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from omniroute.system import DEV_SECRET, LocalSystem
from services.ingest.http import SIGNATURE_HEADER, sign
from shared.topics import INBOUND_BY_CHANNEL, MESSAGES
from tests.support.kafka import read_all
from tests.support.payloads import SHAPES, Shape
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

TEXT = "My USDT deposit has not arrived after 6 confirmations"
FOLLOW_UP = "any news?"

# (topic, value, key, provider header)
Record = tuple[str, bytes, bytes, str]


def numbers() -> Iterator[int]:
    base = int(uuid.uuid4().int % 10**12) * 1000
    return iter(range(base, base + 1000))


def produce(system: LocalSystem, items: list[Record]) -> None:
    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=system.stack.kafka_bootstrap)
        await producer.start()
        try:
            for topic, value, key, provider in items:
                await producer.send(
                    topic, value, key=key, headers=[("provider", provider.encode())]
                )
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(send())


def inbound(shape: Shape, raw: bytes, key: bytes) -> Record:
    return (INBOUND_BY_CHANNEL[shape.channel], raw, key, shape.provider)


def wait_for_tickets(db: Any, ids: list[str], what: str) -> None:
    def ticketed() -> bool:
        found = db.tickets.find({"message_ids": {"$in": ids}}, {"message_ids": 1})
        return {m for t in found for m in t["message_ids"]} >= set(ids)

    wait_until(ticketed, 30, what)


def assert_one_message_one_ticket(
    system: LocalSystem, db: Any, expected: dict[str, tuple[Shape, int]]
) -> None:
    """One event id per message, and one ticket listing it once, then its marker."""
    # Every support.messages record of each provider message, found by what it carries.
    mid_of = {(s.provider, s.provider_message_id(k)): mid for mid, (s, k) in expected.items()}
    ce_ids: dict[str, set[str]] = defaultdict(set)
    for r in asyncio.run(read_all(system.stack.kafka_bootstrap, [MESSAGES])):
        value = json.loads(r.value)
        mid = mid_of.get((value["provider"], value["provider_message_id"]))
        if mid is not None:
            ce_ids[mid].add(dict(r.headers)["ce_id"].decode())
    assert ce_ids == {mid: {mid} for mid in expected}
    for mid, (shape, n) in expected.items():
        tickets = list(db.tickets.find({"message_ids": mid}))
        assert len(tickets) == 1, shape
        assert tickets[0]["message_ids"] == [mid, shape.message_id(n, seq=1)], shape


def test_payload_produced_again_after_it_was_processed(system: LocalSystem, db: Any) -> None:
    n = numbers()
    sent = {shape: (next(n), f"again-{uuid.uuid4().hex}".encode()) for shape in SHAPES}
    expected = {shape.message_id(k): (shape, k) for shape, (k, _) in sent.items()}

    # First delivery: every shape once, each to its ticket.
    produce(system, [inbound(s, s.build(k, TEXT), key) for s, (k, key) in sent.items()])
    wait_for_tickets(db, list(expected), "a ticket for every first copy")

    # The same bytes again, then the marker behind them.
    again: list[Record] = []
    for shape, (k, key) in sent.items():
        again.append(inbound(shape, shape.build(k, TEXT), key))
        again.append(inbound(shape, shape.build(k, FOLLOW_UP, seq=1), key))
    produce(system, again)
    wait_for_tickets(db, markers(sent), "the markers behind the second copies")

    assert_one_message_one_ticket(system, db, expected)


def test_payload_produced_twice_in_a_row(system: LocalSystem, db: Any) -> None:
    n = numbers()
    sent = {shape: (next(n), f"twice-{uuid.uuid4().hex}".encode()) for shape in SHAPES}
    expected = {shape.message_id(k): (shape, k) for shape, (k, _) in sent.items()}

    records: list[Record] = []
    for shape, (k, key) in sent.items():
        records += [inbound(shape, shape.build(k, TEXT), key)] * 2
        records.append(inbound(shape, shape.build(k, FOLLOW_UP, seq=1), key))
    produce(system, records)
    wait_for_tickets(db, [*expected, *markers(sent)], "tickets with messages and markers")

    assert_one_message_one_ticket(system, db, expected)


def test_webhook_retried_by_the_provider(system: LocalSystem, db: Any) -> None:
    n = numbers()
    sent = {shape: (next(n), b"") for shape in SHAPES}
    expected = {shape.message_id(k): (shape, k) for shape, (k, _) in sent.items()}

    def deliver(client: httpx.Client, shape: Shape, k: int, seq: int = 0) -> None:
        body = shape.build(k, FOLLOW_UP if seq else TEXT, seq=seq)
        reply = client.post(
            f"/v1/inbound/{shape.channel}/{shape.provider}",
            content=body,
            headers={SIGNATURE_HEADER: sign(DEV_SECRET, body)},
        )
        assert reply.status_code == 202, (shape, reply.text)
        assert reply.json()["message_ids"] == [shape.message_id(k, seq)]

    with httpx.Client(base_url=system.url("ingest"), timeout=10) as client:
        # The provider did not see our first answer in time, so it sends the request again.
        for shape, (k, _) in sent.items():
            deliver(client, shape, k)
            deliver(client, shape, k)
        wait_for_tickets(db, list(expected), "a ticket for every message")
        # And once more, much later; then the customer's next message.
        for shape, (k, _) in sent.items():
            deliver(client, shape, k)
            deliver(client, shape, k, seq=1)
    wait_for_tickets(db, markers(sent), "the markers behind the last retries")

    assert_one_message_one_ticket(system, db, expected)


def markers(sent: dict[Shape, tuple[int, bytes]]) -> list[str]:
    return [shape.message_id(k, seq=1) for shape, (k, _) in sent.items()]
