"""SLA state in MongoDB: the timers (`sla_timers`).

Each step reaches it through the engines' journal (shared/journal.py, `sla_journal`):
the step's changed timers and events are appended as one entry first; `fold` writes the
newest version of each timer here later, off the firing path.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

from pymongo import InsertOne, ReplaceOne
from pymongo.errors import BulkWriteError

from services.sla.deadlines import SlaState, Timer
from shared.mongo import DUPLICATE_KEY, Database, Document, ensure_only_indexes

TIMERS = "sla_timers"
JOURNAL = "sla"  # shared/journal.py: `sla_journal`, `sla_journal_published`
# The collections sla owns in its own database.
COLLECTIONS: tuple[str, ...] = (TIMERS, f"{JOURNAL}_journal", f"{JOURNAL}_journal_published")
# In a journaled timer document: never stored yet (an insert, not an upsert, folds it).
NEW = "_new"


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


def journaled(t: Timer, seq: int) -> Document:
    """A timer as a journal entry holds it: its document, `seq` at the ticket's progress."""
    doc = timer_doc(t)
    doc["seq"] = max(t.seq, seq)
    if not t.stored:
        doc[NEW] = True
    return doc


class SlaStore(Protocol):
    async def ensure_indexes(self) -> None: ...

    async def load(self, state: SlaState) -> None: ...

    async def fold(self, changes: dict[str, list[Document]]) -> None:
        """Write the newest version of journaled timers (the compactor's fold)."""
        ...


class MongoSlaStore:
    def __init__(self, db: Database) -> None:
        self.timers = db[TIMERS]

    async def ensure_indexes(self) -> None:
        # None: every index makes each timer write dearer (on SecantusDB about 0.1 ms a
        # document), the engine reads this collection only at start-up (active and recently
        # finished timers: one scan) and nothing looks timers up by ticket.
        await ensure_only_indexes(self.timers, [])

    async def load(self, state: SlaState) -> None:
        """Active timers, and those finished within the dedupe window (for applied_seq)."""
        since = datetime.now(UTC) - timedelta(seconds=state.dedupe_window_s)
        async for d in self.timers.find({"state": {"$in": ["running", "paused"]}}):
            state.add(timer_from_doc(d))
        async for d in self.timers.find({"finished_at": {"$gte": since}}):
            state.add(timer_from_doc(d))

    async def fold(self, changes: dict[str, list[Document]]) -> None:
        """Write timers. One never stored is inserted (several times cheaper than an upsert
        on SecantusDB); one that turns out to exist already is replaced instead."""
        docs: list[Document] = []
        ops: list[InsertOne[Document] | ReplaceOne[Document]] = []
        for d in changes.get(TIMERS, ()):
            doc = {k: v for k, v in d.items() if k != NEW}
            docs.append(doc)
            if d.get(NEW):
                ops.append(InsertOne(doc))
            else:
                ops.append(ReplaceOne({"_id": doc["_id"]}, doc, upsert=True))
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
