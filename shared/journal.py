"""The engines' durability: one write-ahead journal for router and sla.

An engine (DESIGN.md, "Workers and engines") decides in memory; each step — a batch of
inputs, or a firing of its clock — is then made durable in three moves:

1. **Append** one journal entry: every document the step changed (by collection) and
   every event it is about to publish, with where in the output topics those events will
   land (`marks`). One insert (or a few parts, for a large step) and nothing else on the
   hot path: the step is durable before anything leaves and before input offsets commit.
2. **Publish** the events; when Kafka has acknowledged them the entry is published. A
   watermark (`published_through`, written at most every `watermark_s`) records it.
3. **Fold** published entries into the engine's collections — in the background (the
   `Compactor`, through the engine's own `fold`: sla), or right after the publish, before
   the step's input offsets commit (the router, whose API reads the journaled documents
   meanwhile) — then delete them.

A new lease holder (or a reload after a failed step) loads the collections, overlays what
the journal still holds, and publishes the journaled events that the output topics lack:
those of entries past the watermark, looked up in the topics from their marks — a short
tail, so a takeover is quick — while the entries below the watermark are known published.
Every event therefore leaves exactly once across crashes and takeovers, and no input is
lost: offsets are committed only after the step's entry is appended and its events are
acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from bson import Binary
from faststream.kafka import KafkaBroker
from pymongo import ASCENDING, DeleteOne

from shared.events import OutboundEvent, header, send_all
from shared.mongo import Database, Document

log = logging.getLogger(__name__)

# (topic, partition) -> offset: an entry's events land at or after these offsets.
Marks = dict[tuple[str, int], int]
# Documents (or events) per stored part: keeps each part far below MongoDB's 16 MB.
PART_ITEMS = 500


@dataclass
class Entry:
    """One step of an engine: the documents it changed and the events it publishes."""

    entry_id: int
    changes: dict[str, list[Document]]  # collection -> whole documents, newest last
    events: list[OutboundEvent]
    marks: Marks = field(default_factory=dict)
    parts: int = 1  # stored documents (set when appended or read back)

    @property
    def documents(self) -> int:
        return sum(len(docs) for docs in self.changes.values())


def latest(entries: Iterable[Entry]) -> dict[str, list[Document]]:
    """The newest version of every document in `entries` (oldest entry first)."""
    merged: dict[str, dict[Any, Document]] = {}
    for entry in entries:
        for collection, docs in entry.changes.items():
            by_id = merged.setdefault(collection, {})
            for d in docs:
                by_id[d["_id"]] = d
    return {c: list(by_id.values()) for c, by_id in merged.items()}


class Journal(Protocol):
    def next_id(self) -> int: ...

    async def append(self, entry: Entry) -> None: ...

    async def pending(self) -> list[Entry]:
        """Every complete entry, oldest first (a part-written one is deleted)."""
        ...

    async def discard(self, entries: Sequence[Entry]) -> None: ...

    async def published_through(self) -> int:
        """The newest entry id known to be published (0: none)."""
        ...

    async def set_published_through(self, entry_id: int) -> None: ...


def _event_doc(e: OutboundEvent) -> Document:
    return {"topic": e.topic, "key": e.key, "value": Binary(e.value), "headers": e.headers}


def _event(d: Document) -> OutboundEvent:
    return OutboundEvent(d["topic"], d.get("key"), bytes(d["value"]), dict(d["headers"]))


def _parts(entry: Entry) -> list[Document]:
    """The entry as documents of at most PART_ITEMS items each."""
    items: list[tuple[str | None, Document]] = [
        (c, d) for c, docs in entry.changes.items() for d in docs
    ] + [(None, _event_doc(e)) for e in entry.events]
    chunks = [items[i : i + PART_ITEMS] for i in range(0, max(1, len(items)), PART_ITEMS)]
    parts = []
    for i, chunk in enumerate(chunks):
        changes: dict[str, list[Document]] = {}
        for c, d in chunk:
            if c is not None:
                changes.setdefault(c, []).append(d)
        parts.append(
            {
                "_id": _part_id(entry.entry_id, i),
                "entry": entry.entry_id,
                "part": i,
                "parts": len(chunks),
                "at": datetime.now(UTC),
                "changes": changes,
                "events": [d for c, d in chunk if c is None],
                "marks": [[t, p, o] for (t, p), o in entry.marks.items()] if i == 0 else [],
            }
        )
    return parts


def _entry(parts: list[Document]) -> Entry:
    changes: dict[str, list[Document]] = {}
    for part in parts:
        for collection, docs in part.get("changes", {}).items():
            changes.setdefault(collection, []).extend(docs)
    return Entry(
        entry_id=int(parts[0]["entry"]),
        changes=changes,
        events=[_event(e) for part in parts for e in part.get("events", [])],
        marks={(t, int(p)): int(o) for t, p, o in parts[0].get("marks", [])},
        parts=len(parts),
    )


def _part_id(entry_id: int, part: int) -> str:
    return f"{entry_id:020d}.{part:05d}"


class MongoJournal:
    """The journal in one collection of the engine's database (`<name>_journal`), and its
    watermark in `<name>_journal_published` (one document)."""

    def __init__(self, db: Database, name: str) -> None:
        self.entries = db[f"{name}_journal"]
        self.watermark = db[f"{name}_journal_published"]
        self._next = 0

    def next_id(self) -> int:
        # Microseconds since the epoch, then +1: a new lease holder's entries sort after
        # anything an earlier holder left (pending() moves the counter past them too).
        self._next = max(self._next + 1, time.time_ns() // 1000)
        return self._next

    async def append(self, entry: Entry) -> None:
        parts = _parts(entry)
        entry.parts = len(parts)
        if len(parts) == 1:
            await self.entries.insert_one(parts[0])
        else:
            await self.entries.insert_many(parts, ordered=True)

    async def pending(self) -> list[Entry]:
        docs = await self.entries.find({}).sort("_id", ASCENDING).to_list()
        grouped: dict[int, list[Document]] = {}
        for d in docs:
            grouped.setdefault(int(d["entry"]), []).append(d)
        complete, torn = [], []
        for parts in grouped.values():
            if len(parts) == parts[0]["parts"]:
                complete.append(_entry(parts))
            else:  # died while appending: nothing of it was applied; its inputs come again
                torn += [d["_id"] for d in parts]
        if torn:
            await self.entries.delete_many({"_id": {"$in": torn}})
        if complete:
            self._next = max(self._next, complete[-1].entry_id)
        return complete

    async def discard(self, entries: Sequence[Entry]) -> None:
        # By _id, one per part: SecantusDB reads every document a range or scan matches.
        ids = [_part_id(e.entry_id, i) for e in entries for i in range(e.parts)]
        if ids:
            await self.entries.bulk_write([DeleteOne({"_id": i}) for i in ids])

    async def published_through(self) -> int:
        d = await self.watermark.find_one({"_id": "published"})
        return int(d["entry"]) if d else 0

    async def set_published_through(self, entry_id: int) -> None:
        await self.watermark.replace_one(
            {"_id": "published"}, {"entry": entry_id, "at": datetime.now(UTC)}, upsert=True
        )


@dataclass
class MemoryJournal:
    """The journal in a list: the in-memory service tests (same engine code path)."""

    entries: list[Entry] = field(default_factory=list)
    through: int = 0
    _next: int = 0

    def next_id(self) -> int:
        self._next += 1
        return self._next

    async def append(self, entry: Entry) -> None:
        self.entries.append(entry)

    async def pending(self) -> list[Entry]:
        return list(self.entries)

    async def discard(self, entries: Sequence[Entry]) -> None:
        gone = {e.entry_id for e in entries}
        self.entries = [e for e in self.entries if e.entry_id not in gone]

    async def published_through(self) -> int:
        return self.through

    async def set_published_through(self, entry_id: int) -> None:
        self.through = max(self.through, entry_id)


# -- output: where a step's events go, and where they landed -----------------------------


class Output(Protocol):
    async def send(self, events: Iterable[OutboundEvent]) -> list[asyncio.Future[Any]]:
        """Hand events to the producer in order; the futures resolve when Kafka has them."""
        ...


@dataclass
class BrokerOutput:
    """Through a FastStream broker (the in-memory test broker delivers at once)."""

    broker: KafkaBroker

    async def send(self, events: Iterable[OutboundEvent]) -> list[asyncio.Future[Any]]:
        return await send_all(self.broker, events)


@dataclass
class ProducerOutput:
    """Straight to an aiokafka producer: an event leaves without FastStream's per-message
    middleware (~150 µs each here), and a step's events go out batched."""

    config: dict[str, Any]  # AIOKafkaProducer keyword arguments
    producer: Any = None  # created in start(): aiokafka wants a running loop

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(**self.config)
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None

    async def send(self, events: Iterable[OutboundEvent]) -> list[asyncio.Future[Any]]:
        if self.producer is None:
            raise RuntimeError("output producer not started")
        return [
            await self.producer.send(
                event.topic,
                event.value,
                key=event.key.encode() if event.key is not None else None,
                headers=[(k, v.encode()) for k, v in event.headers.items()],
            )
            for event in events
        ]


def advance(marks: Marks, acknowledged: Iterable[Any]) -> None:
    """Move `marks` past the records Kafka acknowledged (aiokafka's RecordMetadata)."""
    for meta in acknowledged:
        topic, partition = getattr(meta, "topic", None), getattr(meta, "partition", None)
        if isinstance(topic, str) and isinstance(partition, int):
            key = (topic, partition)
            marks[key] = max(marks.get(key, 0), int(meta.offset) + 1)


# -- what the output topics already hold ---------------------------------------------------


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
    fetch_max_wait_ms: int = 500  # the service's setting (the embedded stack's Tansu: 10)
    # Tansu reports a partition's end as its last batch's first offset + 1: after reaching
    # it, one more short read picks up the rest of that batch.
    tail_ms: int = 200

    async def _consumer(self) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=self.timeout_ms * 3,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
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
                    batch = await consumer.getmany(*parts, timeout_ms=self.tail_ms)
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


async def unpublished(
    pending: Sequence[Entry], through: int, published: PublishedLog
) -> list[OutboundEvent]:
    """The events of `pending` entries that the output topics lack.

    Entries up to the watermark `through` are known published; for the rest (the last
    moments of a dead holder) the topics are read from the entries' marks."""
    tail = [e for e in pending if e.entry_id > through]
    since: Marks = {}
    for entry in tail:
        for key, offset in entry.marks.items():
            since[key] = min(since.get(key, offset), offset)
    already = await published.ids_since(since) if since else set()
    return [ev for entry in tail for ev in entry.events if ev.id not in already]


async def republish(
    pending: Sequence[Entry], journal: Journal, published: PublishedLog, output: Output
) -> int:
    """Recovery's publishing half, the same for every engine: send the events of `pending`
    (a dead holder's journal) that the output topics lack; returns how many."""
    if not pending:
        return 0
    missing = await unpublished(pending, await journal.published_through(), published)
    if missing:
        log.warning(
            "republishing journaled events",
            extra={"events": len(missing), "entries": len(pending)},
        )
        await asyncio.gather(*await output.send(missing))
    return len(missing)


# -- folding published entries into the engine's collections -----------------------------

Fold = Callable[[dict[str, list[Document]]], Awaitable[None]]


@dataclass
class Compactor:
    """Folds published journal entries into the engine's collections, in order, off the hot
    path: the published prefix of the queue, a few documents per write (so a step never
    waits long behind it on MongoDB), then deletes those entries. It never skips an
    unpublished entry: after a failure it stops until the engine reloads, and the reload
    replays everything still in the journal."""

    # Writes the newest version of the documents (the engine's store); None when the engine
    # folds each entry itself once published (the router): then this only forgets them.
    fold: Fold | None
    journal: Journal
    may_write: Callable[[], bool] = lambda: True  # the lease is still ours
    # False while the engine is about to act (e.g. a threshold falls due): it goes first.
    quiet: Callable[[], bool] = lambda: True
    chunk: int = 16
    interval_s: float = 0.25
    watermark_s: float = 0.2
    # Past this many entries waiting, compaction no longer waits for a quiet moment.
    max_backlog: int = 20_000
    queue: deque[Entry] = field(default_factory=deque)
    published: set[int] = field(default_factory=set)
    _through: int = 0
    _through_stored: int = 0
    _through_at: float = 0.0
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def offer(self, entry: Entry) -> None:
        self.queue.append(entry)

    def mark_published(self, entry_id: int) -> None:
        self.published.add(entry_id)
        self._wake.set()

    @property
    def backlog(self) -> int:
        return len(self.queue)

    def _ready(self) -> list[Entry]:
        ready: list[Entry] = []
        for entry in self.queue:
            if entry.entry_id not in self.published:
                break
            ready.append(entry)
        return ready

    async def _wait_quiet(self) -> None:
        while True:  # polled: "quiet" is the engine's clock, not an event
            if self.quiet() or len(self.queue) >= self.max_backlog:
                return
            await asyncio.sleep(0.01)

    async def _store_watermark(self, force: bool = False) -> None:
        """Record how far entries are published (throttled: a missed update only makes a
        takeover read a little more of the output topics)."""
        ready = self._ready()
        if ready:
            self._through = max(self._through, ready[-1].entry_id)
        now = time.monotonic()
        if self._through > self._through_stored and (
            force or now - self._through_at >= self.watermark_s
        ):
            if not self.may_write():
                return
            await self.journal.set_published_through(self._through)
            self._through_stored, self._through_at = self._through, now

    async def compact(self) -> int:
        """Fold the published prefix of the queue; returns the entries folded."""
        await self._store_watermark()
        ready = self._ready()
        folded = 0
        while ready:
            group: list[Entry] = []
            size = 0
            while ready and (
                not group or self.fold is None or size + ready[0].documents <= self.chunk
            ):
                size += ready[0].documents
                group.append(ready.pop(0))
            fold = self.fold
            docs = [(c, d) for c, ds in latest(group).items() for d in ds] if fold else []
            for i in range(0, len(docs), self.chunk):
                await self._wait_quiet()
                if not self.may_write():
                    return folded
                chunk: dict[str, list[Document]] = {}
                for c, d in docs[i : i + self.chunk]:
                    chunk.setdefault(c, []).append(d)
                if fold is not None:
                    await fold(chunk)
            await self._wait_quiet()
            if not self.may_write():
                return folded
            await self.journal.discard(group)
            for entry in group:
                self.queue.popleft()
                self.published.discard(entry.entry_id)
            folded += len(group)
        return folded

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.interval_s)  # let entries gather: fewer, larger writes
            try:
                await self.compact()
            except Exception:
                log.exception("journal compaction failed; retrying")
                self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run())
            if self.queue:
                self._wake.set()

    async def stop(self) -> None:
        """Stop and forget: what was not compacted stays in the journal for the next load."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.queue.clear()
        self.published.clear()
        self._through = self._through_stored = 0
