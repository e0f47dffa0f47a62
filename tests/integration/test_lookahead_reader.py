"""The look-ahead's reader on the real broker: where it starts, what it commits (nothing),
and a held report going as soon as the in-order consumer commits what blocked it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import CollectorRegistry

from shared.broker import ensure_topics
from shared.embedded import EmbeddedStack
from shared.lookahead import LookaheadMetrics, ReadAhead
from tests.support.waiting import await_until

pytestmark = pytest.mark.integration
REPORT = b"theft report"


async def produce(bootstrap: str, topic: str) -> None:
    # Per partition: 300 questions, then a report. On partition 1 the report's author also
    # asked a question at offset 250.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for p, report_key in ((0, b"theft"), (1, b"mixed")):
            for n in range(300):
                key = b"mixed" if (p, n) == (1, 250) else f"q{p}-{n}".encode()
                await producer.send(topic, b"question", key=key, partition=p)
            await producer.send(topic, REPORT, key=report_key, partition=p)
        await producer.flush()
    finally:
        await producer.stop()


async def commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    """What the in-order consumer does after each batch."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
    finally:
        await consumer.stop()


async def committed(bootstrap: str, group: str, tps: list[TopicPartition]) -> dict[Any, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        found = await admin.list_consumer_group_offsets(group, partitions=tps)
        return {tp: meta.offset for tp, meta in found.items()}
    finally:
        await admin.close()


async def test_reads_from_the_consumer_commits_nothing_and_keeps_conversation_order(
    stack: EmbeddedStack,
) -> None:
    bootstrap = stack.kafka_bootstrap
    topic, group = f"test.lookahead.{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, {topic: 2})
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    await produce(bootstrap, topic)
    # The in-order consumer has processed the first 200 records of each partition.
    await commit(bootstrap, group, dict.fromkeys(tps, 200))

    triaged: list[Any] = []
    promoted: list[Any] = []

    async def triage(records: Sequence[Any]) -> list[bool]:
        triaged.extend(records)
        return [r.value == REPORT for r in records]

    async def promote(records: Sequence[Any]) -> None:
        promoted.extend(records)

    metrics = LookaheadMetrics.create("test", CollectorRegistry())
    reader = ReadAhead(
        "test", bootstrap, tps, group, triage, promote, metrics, min_backlog=10, chunk=50
    )
    await reader.start()
    try:
        # Partition 0's report goes at once; partition 1's waits behind its author's
        # question (offset 250), still ahead of the in-order consumer.
        await await_until(lambda: _async(len(promoted) == 1), 30, "the first report promoted")
        await await_until(lambda: _async(len(triaged) == 202), 30, "every waiting record triaged")
        assert [(r.partition, r.offset) for r in promoted] == [(0, 300)]
        assert metrics.held._value.get() == 1
        # Nothing behind the in-order consumer was read again.
        assert min(r.offset for r in triaged) == 200

        # The in-order consumer passes the question: the held report goes.
        await commit(bootstrap, group, {tps[1]: 251})
        await await_until(lambda: _async(len(promoted) == 2), 30, "the held report promoted")
        assert [(r.partition, r.offset) for r in promoted] == [(0, 300), (1, 300)]
    finally:
        await reader.stop()
    # The look-ahead committed nothing: the in-order consumer's offsets are its own.
    assert await committed(bootstrap, group, tps) == {tps[0]: 200, tps[1]: 251}


async def _async(value: bool) -> bool:
    return value
