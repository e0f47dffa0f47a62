"""The brokers hand batch handlers their records as they are: one record FastStream cannot
decode (a header that is not UTF-8, a value that is not JSON) must not fail the batch."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import ConsumerRecord
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, TestKafkaBroker
from prometheus_client import CollectorRegistry

from shared.asyncapi import Records, records
from shared.broker import make_broker, tolerant_headers
from shared.contracts.messages import MessageReceived
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


@pytest.mark.parametrize("apply_types", [False, True], ids=["service broker", "test broker"])
async def test_a_batch_with_values_that_are_not_json_reaches_the_handler(
    apply_types: bool,
) -> None:
    # The service brokers skip FastDepends; the brokers service tests pass in do not. Either
    # way the handler gets the records themselves: its type documents, it never validates.
    settings = IngestSettings(kafka_create_topics=False)
    broker = (
        KafkaBroker(settings.kafka_bootstrap)
        if apply_types
        else make_broker(settings, CollectorRegistry())
    )
    got: list[ConsumerRecord[bytes, bytes]] = []

    @broker.subscriber("t", batch=True, ack_policy=AckPolicy.NACK_ON_ERROR, decoder=records)
    async def on_batch(batch: Records[MessageReceived]) -> None:
        got.extend(batch)

    async with TestKafkaBroker(broker) as br:
        json_type = {"content-type": "application/json"}
        await br.publish(b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "t", headers=json_type)
        await br.publish(b"not json", "t", headers=json_type)
    assert [r.value for r in got] == [b'{"a":' * 10_000 + b"1" + b"}" * 10_000, b"not json"]
    assert [r.topic for r in got] == ["t", "t"]
