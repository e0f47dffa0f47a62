"""Read ahead of an in-order consumer, so likely-P1 work overtakes a surge (issue 15).

Kafka keeps order per partition: a theft report behind 3,000 ordinary questions waits for
all of them. Order only matters per Kafka key (inbound topics and support.messages are
keyed by conversation), and every effect downstream is idempotent by deterministic id, so
a second reader may process a likely-P1 record early: when the in-order consumer reaches
it, it finds the record already done.

The look-ahead reads the in-order consumer's partitions by manual assignment with no
group (it commits nothing: the in-order consumer's offsets stay its own), from that
consumer's committed position, and only while the backlog is worth it:

- `Window` (pure) keeps, per partition, every record read that the in-order consumer has
  not committed yet: which keys still wait where, which records are not triaged yet.
  A likely-P1 record is promoted only if no earlier record with its key still waits and
  the window is complete back to the committed position; otherwise it is held, and
  promoted as soon as what blocks it is committed.
- Triage takes the newest untriaged records first: the oldest part of a backlog is the
  next thing the in-order consumer processes anyway; a report that just arrived is the
  one that would wait longest.
- `ReadAhead` is the loop: every `refresh_s` (at once while there is work) the committed
  offsets, a fetch of what arrived, then, while at least `min_backlog` records wait,
  triage (the service's cheap part) and promote (the service's normal, idempotent effect).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.topics import PARTITIONS

log = logging.getLogger(__name__)


def every_partition(*topics: str) -> list[TopicPartition]:
    """Every partition of `topics` (the contract's counts), as aiokafka names them."""
    return [TopicPartition(t, p) for t in topics for p in range(PARTITIONS[t])]


FETCH_RECORDS = 5000  # per round

# What the service's triage says of a batch of records: True for a likely P1.
Triage = Callable[[Sequence[Any]], Awaitable[list[bool]]]
# The service's normal effect for the promoted records (offset order per partition).
Promote = Callable[[Sequence[Any]], Awaitable[None]]


@dataclass
class PartitionWindow:
    """One partition's records from the in-order consumer's position to what was read."""

    committed: int = 0  # the in-order consumer's next offset
    start: int = 0  # every record from here on has been read (complete if <= committed)
    next_offset: int = 0  # the next offset to read
    waiting: dict[bytes | None, list[int]] = field(default_factory=dict)  # key -> offsets
    untriaged: dict[int, Any] = field(default_factory=dict)  # offset -> record
    held: dict[int, Any] = field(default_factory=dict)  # likely P1, behind its key

    @property
    def complete(self) -> bool:
        return self.start <= self.committed

    def blocked(self, record: Any) -> bool:
        """Whether an earlier record with the same key still waits (or may: incomplete)."""
        if not self.complete:
            return True
        offsets = self.waiting.get(record.key, [])
        return bool(offsets) and offsets[0] < record.offset

    def forget(self, record: Any) -> None:
        offsets = self.waiting.get(record.key)
        if offsets is None:
            return
        i = bisect.bisect_left(offsets, record.offset)
        if i < len(offsets) and offsets[i] == record.offset:
            del offsets[i]
        if not offsets:
            del self.waiting[record.key]

    def restore(self, record: Any) -> None:
        if record.offset >= self.committed:
            bisect.insort(self.waiting.setdefault(record.key, []), record.offset)


@dataclass
class Window:
    """Pure bookkeeping of what waits behind the in-order consumer, per partition."""

    max_records: int = 20_000  # per partition: beyond, start at the end minus this
    partitions: dict[TopicPartition, PartitionWindow] = field(default_factory=dict)

    def advance(
        self, committed: dict[TopicPartition, int], ends: dict[TopicPartition, int]
    ) -> None:
        """The in-order consumer's committed positions (and the topics' ends) moved on:
        forget what it has processed; where it overtook the look-ahead, read from it."""
        for tp, position in committed.items():
            fresh = tp not in self.partitions
            w = self.partitions.setdefault(tp, PartitionWindow())
            w.committed = position
            if fresh or w.next_offset < position:
                # Nothing read is still waiting: begin again at the consumer, within reach.
                w.start = w.next_offset = max(position, ends.get(tp, position) - self.max_records)
                w.waiting.clear()
                w.untriaged.clear()
                w.held.clear()
                continue
            for key in list(w.waiting):
                offsets = w.waiting[key]
                del offsets[: bisect.bisect_left(offsets, position)]
                if not offsets:
                    del w.waiting[key]
            for done in [o for o in w.untriaged if o < position]:
                del w.untriaged[done]
            for done in [o for o in w.held if o < position]:
                del w.held[done]

    def positions(self) -> dict[TopicPartition, int]:
        return {tp: w.next_offset for tp, w in self.partitions.items()}

    def restarting(self, committed: dict[TopicPartition, int]) -> list[TopicPartition]:
        """The partitions `advance` will (re)start at the consumer: they need the end."""
        return [
            tp
            for tp, position in committed.items()
            if tp not in self.partitions or self.partitions[tp].next_offset < position
        ]

    def backlog(self) -> int:
        """Records read that the in-order consumer has not committed yet."""
        return sum(max(0, w.next_offset - w.committed) for w in self.partitions.values())

    def add(self, tp: TopicPartition, records: Iterable[Any]) -> int:
        w = self.partitions.setdefault(tp, PartitionWindow())
        n = 0
        for r in records:
            if r.offset < w.next_offset:
                continue  # re-read after a seek
            w.waiting.setdefault(r.key, []).append(r.offset)
            w.untriaged[r.offset] = r
            w.next_offset = r.offset + 1
            n += 1
        return n

    def untriaged(self) -> int:
        return sum(len(w.untriaged) for w in self.partitions.values())

    def newest(self, n: int) -> list[Any]:
        """Take up to `n` untriaged records, newest first (by timestamp, then offset)."""
        every = [r for w in self.partitions.values() for r in w.untriaged.values()]
        every.sort(key=lambda r: (r.timestamp, r.offset), reverse=True)
        taken = every[:n]
        for r in taken:
            del self.partitions[TopicPartition(r.topic, r.partition)].untriaged[r.offset]
        return taken

    def select(self, triaged: Sequence[tuple[Any, bool]]) -> tuple[list[Any], int]:
        """(records to promote in offset order, how many likely-P1 records are held).

        The newly triaged likely-P1 records join the held ones; each is promoted unless an
        earlier record with its key still waits. Promoted records stop blocking their key
        (they are done, ahead of the rest), so a second report of one conversation follows.
        """
        for r, urgent in triaged:
            if urgent:
                self.partitions[TopicPartition(r.topic, r.partition)].held[r.offset] = r
        chosen: list[Any] = []
        held = 0
        for w in self.partitions.values():
            for offset in sorted(w.held):
                r = w.held[offset]
                if w.blocked(r):
                    held += 1
                    continue
                del w.held[offset]
                w.forget(r)
                chosen.append(r)
        return chosen, held

    def failed(self, records: Iterable[Any]) -> None:
        """Promotion failed: the records wait (and block their keys) for the in-order pass."""
        for r in records:
            self.partitions[TopicPartition(r.topic, r.partition)].restore(r)


@dataclass(frozen=True)
class LookaheadMetrics:
    records: Counter
    promoted: Counter
    held: Gauge
    failures: Counter
    backlog: Gauge
    triage_seconds: Histogram
    running: Gauge

    @classmethod
    def create(cls, service: str, registry: CollectorRegistry) -> LookaheadMetrics:
        p = f"omniroute_{service}_lookahead"
        return cls(
            records=Counter(
                f"{p}_records_total",
                "Records triaged ahead of the in-order consumer.",
                registry=registry,
            ),
            promoted=Counter(
                f"{p}_promoted_total",
                "Likely-P1 records processed ahead of the in-order consumer.",
                registry=registry,
            ),
            held=Gauge(
                f"{p}_held_records",
                "Likely-P1 records left in order: an earlier record of their conversation"
                " still waits.",
                registry=registry,
            ),
            failures=Counter(
                f"{p}_failures_total",
                "Look-ahead rounds that failed (the in-order consumer still processes all).",
                registry=registry,
            ),
            backlog=Gauge(
                f"{p}_backlog_records",
                "Records the in-order consumer has not committed yet.",
                registry=registry,
            ),
            triage_seconds=Histogram(
                f"{p}_triage_seconds",
                "Time to triage one chunk of waiting records.",
                buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
                registry=registry,
            ),
            running=Gauge(
                f"{p}_running",
                "1 while the look-ahead reads (on a router: only on the lease holder).",
                registry=registry,
            ),
        )


@dataclass
class ReadAhead:
    """The look-ahead loop for one in-order consumer group (see the module docstring)."""

    name: str
    bootstrap: str
    partitions: Sequence[TopicPartition]
    group_id: str  # the in-order consumer's group: its committed offsets are read, not written
    triage: Triage
    promote: Promote
    metrics: LookaheadMetrics
    min_backlog: int = 100
    chunk: int = 200
    refresh_s: float = 0.05
    may_act: Callable[[], bool] = lambda: True
    window: Window = field(default_factory=Window)
    enabled: bool = True  # off: start() does nothing, records keep strict arrival order
    task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.enabled:
            self.task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def run(self) -> None:
        while True:
            try:
                await self._run()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The in-order consumer does all the work anyway: try again shortly.
                log.exception("look-ahead failed", extra={"lookahead": self.name})
                self.metrics.failures.inc()
                self.window = Window(self.window.max_records)
                await asyncio.sleep(1.0)

    async def _run(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id=f"omniroute-{self.name}-lookahead",
            group_id=None,  # commits nothing
            enable_auto_commit=False,
            auto_offset_reset="latest",
            # Short polls: the offsets asked every round share the connection with fetches.
            fetch_max_wait_ms=20,
        )
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap,
            client_id=f"omniroute-{self.name}-lookahead",
            request_timeout_ms=3000,
        )
        await consumer.start()
        try:
            await admin.start()
            consumer.assign(list(self.partitions))
            while True:
                if not self.may_act():
                    self.metrics.running.set(0)
                    self.window = Window(self.window.max_records)
                    await asyncio.sleep(self.refresh_s * 4)
                    continue
                self.metrics.running.set(1)
                busy = await self.round(consumer, admin)
                await asyncio.sleep(0 if busy else self.refresh_s)
        finally:
            self.metrics.running.set(0)
            with contextlib.suppress(Exception):
                await admin.close()
            await consumer.stop()

    async def _committed(
        self, consumer: AIOKafkaConsumer, admin: AIOKafkaAdminClient
    ) -> dict[TopicPartition, int]:
        tps = list(self.partitions)
        offsets = await admin.list_consumer_group_offsets(self.group_id, partitions=tps)
        fresh = [tp for tp in tps if tp not in offsets or offsets[tp].offset < 0]
        # No commit yet: the in-order consumer starts at the earliest record.
        starts: dict[TopicPartition, int] = await consumer.beginning_offsets(fresh) if fresh else {}
        return {tp: starts[tp] if tp in starts else offsets[tp].offset for tp in tps}

    async def round(self, consumer: AIOKafkaConsumer, admin: AIOKafkaAdminClient) -> bool:
        """One pass: refresh positions, read, triage the newest chunk, promote. Returns
        whether there is more to do right away."""
        committed = await self._committed(consumer, admin)
        # The end is asked only to start within reach: Tansu's ListOffsets answers the last
        # batch's base offset + 1, so the backlog is counted from what was read instead.
        restarting = self.window.restarting(committed)
        ends: dict[TopicPartition, int] = (
            await consumer.end_offsets(restarting) if restarting else {}
        )
        before = self.window.positions()
        self.window.advance(committed, ends)
        for tp, w in self.window.partitions.items():
            if before.get(tp) != w.next_offset:
                consumer.seek(tp, w.next_offset)
        fetched = 0
        # Records are held in memory until triaged (or committed): at most `max_records`.
        if self.window.untriaged() < self.window.max_records:
            # Paused between rounds, so an idle look-ahead does not poll the broker nonstop.
            consumer.resume(*self.partitions)
            batch = await consumer.getmany(timeout_ms=20, max_records=FETCH_RECORDS)
            consumer.pause(*self.partitions)
            for tp, records in batch.items():
                fetched += self.window.add(tp, records)
        backlog = self.window.backlog()
        self.metrics.backlog.set(backlog)
        more = fetched >= FETCH_RECORDS  # the read stopped at its limit
        if backlog < self.min_backlog:
            # The in-order consumer is about to reach everything anyway.
            return more
        chunk = self.window.newest(self.chunk)
        flags: list[bool] = []
        if chunk:
            started = time.perf_counter()
            flags = await self.triage(chunk)
            self.metrics.triage_seconds.observe(time.perf_counter() - started)
            self.metrics.records.inc(len(chunk))
        # Held records are looked at again each round: what blocked them may be committed.
        chosen, held = self.window.select(list(zip(chunk, flags, strict=True)))
        self.metrics.held.set(held)
        if chosen:
            chosen.sort(key=lambda r: (r.topic, r.partition, r.offset))
            started = time.perf_counter()
            try:
                await self.promote(chosen)
            except Exception:
                log.exception("look-ahead promotion failed", extra={"lookahead": self.name})
                self.metrics.failures.inc()
                self.window.failed(chosen)
            else:
                self.metrics.promoted.inc(len(chosen))
                log.info(
                    "likely-P1 records processed ahead of the in-order consumer",
                    extra={
                        "lookahead": self.name,
                        "records": len(chosen),
                        "backlog": backlog,
                        "promote_s": round(time.perf_counter() - started, 3),
                    },
                )
        return bool(chunk) or more
