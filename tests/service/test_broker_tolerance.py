"""The brokers hand batch handlers their records as they are: one record FastStream cannot
decode (a header that is not UTF-8, a value that is not JSON) must not fail the batch."""

from __future__ import annotations

from typing import Any

from aiokafka import ConsumerRecord
from faststream import AckPolicy
from faststream.kafka import TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import CollectorRegistry

from shared.broker import make_broker, tolerant_headers
from shared.events import records_of
from shared.settings import IngestSettings


def record(headers: list[tuple[str, Any]]) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="t",
        partition=0,
        offset=1,
        timestamp=0,
        timestamp_type=0,
        key=None,
        value=b"x",
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=1,
        headers=headers,
    )


async def test_header_values_that_are_not_utf8_or_null_become_readable() -> None:
    seen: list[Any] = []

    async def original(msg: Any) -> Any:
        seen.append(msg)
        return msg

    good = record([("provider", b"generic")])
    bad = record([("provider", b"gen\xffric"), ("x-null", None)])
    await tolerant_headers((good, bad), original)
    first, second = seen[0]
    assert first is good  # untouched when nothing needs fixing
    assert second.headers == [("provider", "gen\ufffdric".encode()), ("x-null", b"")]
    assert second.value == b"x"


async def test_a_batch_with_values_that_are_not_json_reaches_the_handler() -> None:
    broker = make_broker(IngestSettings(kafka_create_topics=False), CollectorRegistry())
    got: list[bytes] = []

    @broker.subscriber("t", batch=True, ack_policy=AckPolicy.NACK_ON_ERROR)
    async def on_batch(msg: KafkaMessage) -> None:
        got.extend(r.value for r in records_of(msg.raw_message))

    async with TestKafkaBroker(broker) as br:
        json_type = {"content-type": "application/json"}
        await br.publish(b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "t", headers=json_type)
        await br.publish(b"not json", "t", headers=json_type)
    assert got == [b'{"a":' * 10_000 + b"1" + b"}" * 10_000, b"not json"]
