"""The embedded stack answers for real: Kafka metadata, topics, MongoDB."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from shared.embedded import EmbeddedStack
from shared.topics import PARTITIONS
from tests.support.procs import alive

pytestmark = pytest.mark.integration


async def test_every_topic_exists_with_its_partitions(stack: EmbeddedStack) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(list(PARTITIONS))
    finally:
        await admin.close()
    counts = {t["topic"]: len(t["partitions"]) for t in described}
    assert counts == PARTITIONS


async def test_keyed_records_round_trip_with_headers(stack: EmbeddedStack) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    await producer.start()
    try:
        meta = await producer.send_and_wait(
            "support.incidents", b"{}", key=b"k1", headers=[("ce_id", b"x1")]
        )
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap)
    await consumer.start()
    try:
        from aiokafka import TopicPartition

        tp = TopicPartition("support.incidents", meta.partition)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        record = await consumer.getone()
    finally:
        await consumer.stop()
    assert (record.key, record.headers[0]) == (b"k1", ("ce_id", b"x1"))


async def test_mongodb_answers_and_processes_are_running(stack: EmbeddedStack, db: Any) -> None:
    assert (await db.command("ping"))["ok"] == 1
    assert len(stack.pids) == 2
    assert all(alive(p) for p in stack.pids)
