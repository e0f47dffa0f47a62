"""SLA state in MongoDB: the timers (`sla_timers`) and a write-ahead journal (`sla_journal`).

Every batch of ticket events and every firing of due thresholds is first written as ONE
journal document — the changed timers, the events about to be published, how far each
ticket's events were applied, and where in the output topics those events will land.
One insert is atomic and cheap (no per-timer round trip), so the state is durable before
anything leaves and before input offsets are committed. A compactor folds published
entries into `sla_timers` in the background and deletes them; a new lease holder replays
what is left, publishing only the events the topic does not already hold.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from bson import Binary
from pymongo import ASCENDING, DeleteOne, InsertOne, ReplaceOne
from pymongo.errors import BulkWriteError

from services.sla.deadlines import SlaState, Timer
from shared.events import OutboundEvent
from shared.mongo import DUPLICATE_KEY, Database, Document

# The collections sla owns in its own database.
COLLECTIONS: tuple[str, ...] = ("sla_timers", "sla_journal")

# (topic, partition) -> offset: the entry's events land at or after these offsets
Marks = dict[tuple[str, int], int]


def timer_doc(t: Timer) -> Document:
    doc: Document = {
        "_id": t.timer_id,
        "ticket_id": t.ticket_id,
        "metric": t.metric,
        "priority": t.priority,
        "channel": t.channel,
        "customer_id": t.customer_id,
        "customer_tier": t.customer_tier,
        "category": t.category,
        "agent_id": t.agent_id,
        "policy": t.policy,
        "calendar": t.calendar,
        "warning_ratio": t.warning_ratio,
        "started_at": t.started_at,
        "due_at": t.due_at,
        "warn_at": t.warn_at,
        "target_s": t.target_s,
        "banked_us": t.banked_us,
        "running_since": t.running_since,
        "state": t.state,
        "paused_at": t.paused_at,
        "warned": t.warned,
        "breached": t.breached,
        "seq": t.seq,
        "finished_at": t.finished_at,
        "armed_at": t.armed_at,
    }
    # Fields that are None are left out: smaller documents, cheaper writes.
    return {k: v for k, v in doc.items() if v is not None}


def timer_from_doc(d: Document, *, stored: bool = True) -> Timer:
    target_s = float(d["target_s"])
    state = d["state"]
    running_since = d.get("running_since")
    banked_us = d.get("banked_us")
    if banked_us is None:
        # Written before timers banked their time (calendar time only): derive it.
        target_us = round(target_s * 1_000_000)
        if state == "paused" and d.get("paused_at") is not None:
            left = d["due_at"] - d["paused_at"]
            banked_us = target_us - round(left.total_seconds() * 1_000_000)
        else:
            banked_us = 0
            if state == "running":
                running_since = d["due_at"] - timedelta(seconds=target_s)
    return Timer(
        timer_id=d["_id"],
        ticket_id=d["ticket_id"],
        metric=d["metric"],
        priority=d["priority"],
        channel=d["channel"],
        customer_id=d["customer_id"],
        customer_tier=d.get("customer_tier", "standard"),
        category=d.get("category"),
        agent_id=d.get("agent_id"),
        policy=d.get("policy", "default"),
        calendar=d.get("calendar"),
        warning_ratio=float(d.get("warning_ratio", 0.75)),
        started_at=d["started_at"],
        due_at=d["due_at"],
        warn_at=d.get("warn_at"),
        target_s=target_s,
        banked_us=int(banked_us),
        running_since=running_since,
        state=state,
        paused_at=d.get("paused_at"),
        warned=bool(d.get("warned")),
        breached=bool(d.get("breached")),
        seq=int(d.get("seq", 0)),
        finished_at=d.get("finished_at"),
        armed_at=d.get("armed_at"),
        stored=stored,
    )


class SlaStore(Protocol):
    async def ensure_indexes(self) -> None: ...

    async def load(self, state: SlaState) -> None: ...

    async def save(self, timers: Iterable[Timer], progress: dict[str, int]) -> None: ...


class MongoSlaStore:
    def __init__(self, db: Database) -> None:
        self.timers = db["sla_timers"]

    async def ensure_indexes(self) -> None:
        # Only the lookup by ticket: every index makes each timer write dearer (on
        # SecantusDB about 0.1 ms a document), and the engine itself reads this collection
        # only at start-up (active and recently finished timers: one scan).
        await self.timers.create_index([("ticket_id", ASCENDING)])

    async def load(self, state: SlaState) -> None:
        """Active timers, and those finished within the dedupe window (for applied_seq)."""
        since = datetime.now(UTC) - timedelta(seconds=state.dedupe_window_s)
        async for d in self.timers.find({"state": {"$in": ["running", "paused"]}}):
            state.add(timer_from_doc(d))
        async for d in self.timers.find({"finished_at": {"$gte": since}}):
            state.add(timer_from_doc(d))

    async def save(self, timers: Iterable[Timer], progress: dict[str, int] | None = None) -> None:
        """Write timers; a ticket's progress rides on its timers (`seq`).

        A timer never stored is inserted (several times cheaper than an upsert on
        SecantusDB); one that turns out to exist already is replaced instead."""
        docs: list[Document] = []
        ops: list[InsertOne[Document] | ReplaceOne[Document]] = []
        for t in timers:
            doc = timer_doc(t)
            if progress and progress.get(t.ticket_id, 0) > t.seq:
                doc["seq"] = progress[t.ticket_id]
            docs.append(doc)
            if t.stored:
                ops.append(ReplaceOne({"_id": t.timer_id}, doc, upsert=True))
            else:
                ops.append(InsertOne(doc))
        if not ops:
            return
        try:
            await self.timers.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            existing = [docs[e["index"]] for e in errors]
            await self.timers.bulk_write(
                [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in existing], ordered=False
            )


@dataclass
class JournalEntry:
    """One atomic step of the engine: what changed and what is about to be published."""

    entry_id: int
    timers: list[Timer]  # snapshots, as they were after the step
    events: list[OutboundEvent]
    progress: dict[str, int] = field(default_factory=dict)
    marks: Marks = field(default_factory=dict)


class SlaJournal(Protocol):
    # False for a journal that writes straight through to the store: nothing to fold in.
    needs_compaction: bool

    def next_id(self) -> int: ...

    async def append(self, entry: JournalEntry) -> None: ...

    async def pending(self) -> list[JournalEntry]: ...

    async def discard(self, entry_ids: list[int]) -> None: ...


def entry_doc(entry: JournalEntry) -> Document:
    return {
        "_id": entry.entry_id,
        "at": datetime.now(UTC),
        "timers": [timer_doc(t) for t in entry.timers],
        "events": [
            {"topic": e.topic, "key": e.key, "value": Binary(e.value), "headers": e.headers}
            for e in entry.events
        ],
        "progress": [[k, v] for k, v in entry.progress.items()],
        "marks": [[topic, part, offset] for (topic, part), offset in entry.marks.items()],
    }


def entry_from_doc(d: Document) -> JournalEntry:
    return JournalEntry(
        entry_id=int(d["_id"]),
        timers=[timer_from_doc(t, stored=False) for t in d["timers"]],
        events=[
            OutboundEvent(
                topic=e["topic"], key=e.get("key"), value=bytes(e["value"]), headers=e["headers"]
            )
            for e in d["events"]
        ],
        progress={k: int(v) for k, v in d.get("progress", [])},
        marks={(topic, int(part)): int(offset) for topic, part, offset in d.get("marks", [])},
    )


class MongoSlaJournal:
    needs_compaction = True

    def __init__(self, db: Database) -> None:
        self.entries = db["sla_journal"]
        self._next = 0

    def next_id(self) -> int:
        # Microseconds since the epoch, then +1: a new lease holder's entries sort after
        # anything an earlier holder left (pending() moves the counter past them too).
        self._next = max(self._next + 1, time.time_ns() // 1000)
        return self._next

    async def append(self, entry: JournalEntry) -> None:
        await self.entries.insert_one(entry_doc(entry))

    async def pending(self) -> list[JournalEntry]:
        docs: list[dict[str, Any]] = await self.entries.find({}).sort("_id", ASCENDING).to_list()
        out = [entry_from_doc(d) for d in docs]
        if out:
            self._next = max(self._next, out[-1].entry_id)
        return out

    async def discard(self, entry_ids: list[int]) -> None:
        # One delete per id: SecantusDB reads every document a range matches.
        if entry_ids:
            await self.entries.bulk_write([DeleteOne({"_id": i}) for i in entry_ids])


@dataclass
class MemoryJournal:
    """A journal in a list (tests of the journal and the compactor)."""

    entries: list[JournalEntry] = field(default_factory=list)
    needs_compaction: bool = True
    _next: int = 0

    def next_id(self) -> int:
        self._next += 1
        return self._next

    async def append(self, entry: JournalEntry) -> None:
        self.entries.append(entry)

    async def pending(self) -> list[JournalEntry]:
        return list(self.entries)

    async def discard(self, entry_ids: list[int]) -> None:
        gone = set(entry_ids)
        self.entries = [e for e in self.entries if e.entry_id not in gone]


@dataclass
class WriteThroughJournal:
    """No journal, for a store whose `save` is atomic and instant by itself (the in-memory
    fakes of the service tests): each entry is saved at once and nothing stays pending."""

    store: SlaStore
    needs_compaction: bool = False
    _next: int = 0

    def next_id(self) -> int:
        self._next += 1
        return self._next

    async def append(self, entry: JournalEntry) -> None:
        await self.store.save(entry.timers, entry.progress)

    async def pending(self) -> list[JournalEntry]:
        return []

    async def discard(self, entry_ids: list[int]) -> None:
        return None


def merge_timers(entries: Sequence[JournalEntry]) -> tuple[list[Timer], dict[str, int]]:
    """The latest snapshot of every timer in `entries` (oldest first), and the progress."""
    latest: dict[str, Timer] = {}
    progress: dict[str, int] = {}
    for entry in entries:
        for t in entry.timers:
            latest[t.timer_id] = t
        for ticket, seq in entry.progress.items():
            progress[ticket] = max(progress.get(ticket, 0), seq)
    return list(latest.values()), progress
