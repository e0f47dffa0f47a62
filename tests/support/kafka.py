"""Reading topics in tests: on a real broker every record from the beginning, without a
consumer group; in memory (TestKafkaBroker) what a service publishes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faststream.kafka import KafkaBroker


async def read_all(bootstrap: str, topics: Sequence[str], timeout_ms: int = 1500) -> list[Any]:
    """Every record currently in `topics` (all partitions, from offset 0)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        parts = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(consumer.partitions_for_topic(t) or await _partitions(consumer, t))
        ]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        end = await consumer.end_offsets(parts)
        records: list[Any] = []
        while await _behind(consumer, parts, end):
            batch = await consumer.getmany(*parts, timeout_ms=timeout_ms)
            if not batch:
                break
            for recs in batch.values():
                records.extend(recs)
        return records
    finally:
        await consumer.stop()


def captured(broker: KafkaBroker, topic: str) -> list[dict[str, Any]]:
    """The JSON bodies published to `topic`, in order, once `broker` runs in a TestKafkaBroker."""
    bodies: list[dict[str, Any]] = []

    @broker.subscriber(topic)
    async def capture(body: dict[str, Any]) -> None:
        bodies.append(body)

    return bodies


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()


async def _behind(
    consumer: AIOKafkaConsumer, parts: list[TopicPartition], end: dict[Any, int]
) -> bool:
    for tp in parts:
        if await consumer.position(tp) < end[tp]:
            return True
    return False
