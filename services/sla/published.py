"""What the output topics already hold: lets a new lease holder publish a journal's events
that a crashed holder had not sent, without repeating the ones it had (no duplicates)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.sla.store import Marks
from shared.events import header


class PublishedLog(Protocol):
    async def end_offsets(self) -> Marks: ...

    async def ids_since(self, marks: Marks) -> set[str]: ...


@dataclass
class NoPublishedLog:
    """For in-memory brokers (tests): nothing to look up, every pending event is sent."""

    async def end_offsets(self) -> Marks:
        return {}

    async def ids_since(self, marks: Marks) -> set[str]:
        return set()


@dataclass
class KafkaPublishedLog:
    bootstrap: str
    topics: Sequence[str]
    timeout_ms: int = 2000

    async def _consumer(self) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=self.timeout_ms * 3,
        )
        await consumer.start()
        try:
            parts: list[TopicPartition] = []
            for topic in self.topics:
                found = consumer.partitions_for_topic(topic)
                if not found:
                    await consumer._client.force_metadata_update()
                    found = consumer.partitions_for_topic(topic) or set()
                parts += [TopicPartition(topic, p) for p in sorted(found)]
        except BaseException:
            await consumer.stop()
            raise
        return consumer, parts

    async def end_offsets(self) -> Marks:
        consumer, parts = await self._consumer()
        try:
            ends = await consumer.end_offsets(parts) if parts else {}
            return {(tp.topic, tp.partition): int(off) for tp, off in ends.items()}
        finally:
            await consumer.stop()

    async def ids_since(self, marks: Marks) -> set[str]:
        """`ce_id`s of every record from `marks` to the current end of each partition."""
        consumer, parts = await self._consumer()
        try:
            parts = [tp for tp in parts if (tp.topic, tp.partition) in marks]
            if not parts:
                return set()
            consumer.assign(parts)
            ends = await consumer.end_offsets(parts)
            for tp in parts:
                consumer.seek(tp, marks[(tp.topic, tp.partition)])
            seen: set[str] = set()
            while True:
                behind = [tp for tp in parts if await consumer.position(tp) < ends[tp]]
                if not behind:
                    # Tansu reports a partition's end as its last batch's first offset + 1:
                    # read on until nothing more comes, so that batch's tail is seen too.
                    batch = await consumer.getmany(*parts, timeout_ms=self.timeout_ms)
                    if not batch:
                        return seen
                else:
                    batch = await consumer.getmany(*behind, timeout_ms=self.timeout_ms)
                    if not batch:
                        raise TimeoutError("could not read the output topic to its end")
                for records in batch.values():
                    for record in records:
                        ce_id = header(record.headers or [], "ce_id")
                        if ce_id:
                            seen.add(ce_id)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
