"""Acknowledgements (`notify_acks`): what an acknowledgement waits for, and what it told.

One document per ticket (`_id` = ticket id). The acknowledgement quotes the deadline sla
publishes, and `opened` (support.tickets) and the timer's `started` (support.sla) come on
different topics in either order: each half is stored as it comes, and the
acknowledgement is decided once both are there — or at `wait_until` with the ticket alone
(sla silent: no promise). Two replicas storing the halves at the same moment may each miss
the other's: a deadline brings `wait_until` to within `DEADLINE_GRACE_S`, so the sweep
decides such an acknowledgement seconds later, with its deadline. Then `told` holds the
position and estimate given, and `recheck_at` when that estimate has turned out wrong if
the customer still waits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.errors import BulkWriteError

from services.notify.estimate import Ack, Deadline
from shared.mongo import DUPLICATE_KEY, Database, Document, ensure_only_indexes

COLLECTIONS = ("notify_acks",)
DEADLINE_GRACE_S = 2.0


class AckStore(Protocol):
    async def ensure_indexes(self) -> None: ...
    async def opened(self, items: Sequence[tuple[str, str, datetime]], now: datetime) -> None: ...
    async def deadlines(self, items: Sequence[tuple[str, Deadline]], now: datetime) -> None: ...
    async def get(self, ticket_ids: Iterable[str]) -> dict[str, Ack]: ...
    async def overdue(self, now: datetime, limit: int) -> list[Ack]: ...
    async def told(self, acks: Sequence[Ack], now: datetime) -> None: ...
    async def rechecks_due(self, now: datetime, limit: int) -> list[Ack]: ...
    async def rechecked(self, ticket_ids: Iterable[str]) -> None: ...


def deadline_doc(d: Deadline) -> Document:
    return {
        "target_s": d.target_s,
        "due_at": d.due_at,
        "at": d.at,
        "calendar": d.calendar,
        "policy": d.policy,
    }


def ack_of(d: Document) -> Ack:
    dl = d.get("deadline")
    return Ack(
        ticket_id=d["_id"],
        cause_event_id=d.get("cause_event_id"),
        wait_until=d.get("wait_until"),
        deadline=None
        if not dl
        else Deadline(
            target_s=dl["target_s"],
            due_at=dl["due_at"],
            at=dl["at"],
            calendar=dl.get("calendar"),
            policy=dl.get("policy", "default"),
        ),
        decided=bool(d.get("decided")),
        position=d.get("position"),
        expected_s=d.get("expected_s"),
        told_at=d.get("told_at"),
        recheck_at=d.get("recheck_at"),
    )


class MongoAckStore:
    def __init__(self, db: Database, retention_s: float = 90 * 86400) -> None:
        self.acks = db["notify_acks"]
        self.retention_s = retention_s

    async def ensure_indexes(self) -> None:
        await ensure_only_indexes(
            self.acks,
            [
                IndexModel([("decided", ASCENDING), ("wait_until", ASCENDING)]),  # overdue
                IndexModel([("recheck_at", ASCENDING)]),  # rechecks_due
                IndexModel("expire_at", expireAfterSeconds=0),
            ],
        )

    async def _write(self, ops: list[UpdateOne]) -> None:
        if not ops:
            return
        try:
            await self.acks.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            # A duplicate key: the upsert of a deadline older than the stored one.
            if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise

    async def opened(self, items: Sequence[tuple[str, str, datetime]], now: datetime) -> None:
        """(ticket id, the opened event's id, wait for sla until)."""
        expire_at = now + timedelta(seconds=self.retention_s)
        await self._write(
            [
                UpdateOne(
                    {"_id": tid},
                    {
                        "$set": {"cause_event_id": ce_id, "expire_at": expire_at},
                        "$min": {"wait_until": until},
                        "$setOnInsert": {"decided": False},
                    },
                    upsert=True,
                )
                for tid, ce_id, until in items
            ]
        )

    async def deadlines(self, items: Sequence[tuple[str, Deadline]], now: datetime) -> None:
        if not items:
            return
        expire_at = now + timedelta(seconds=self.retention_s)
        grace = now + timedelta(seconds=DEADLINE_GRACE_S)
        # Only a newer deadline replaces one (a redelivered `started` after `retargeted`).
        # What is stored decides the filter: an `$or` beside `_id` makes SecantusDB scan.
        ids = sorted({tid for tid, _ in items})
        stored = {
            d["_id"]: (d.get("deadline") or {}).get("at")
            async for d in self.acks.find({"_id": {"$in": ids}}, {"deadline.at": 1})
        }

        def newer(tid: str, d: Deadline) -> Document:
            if stored.get(tid) is None:
                return {"_id": tid, "deadline": None}
            return {"_id": tid, "deadline.at": {"$lt": d.at}}

        await self._write(
            [
                UpdateOne(
                    newer(tid, d),
                    {
                        "$set": {"deadline": deadline_doc(d)},
                        "$min": {"wait_until": grace},
                        "$setOnInsert": {"decided": False, "expire_at": expire_at},
                    },
                    upsert=True,
                )
                for tid, d in items
            ]
        )

    async def get(self, ticket_ids: Iterable[str]) -> dict[str, Ack]:
        ids = sorted(set(ticket_ids))
        if not ids:
            return {}
        return {d["_id"]: ack_of(d) async for d in self.acks.find({"_id": {"$in": ids}})}

    async def overdue(self, now: datetime, limit: int) -> list[Ack]:
        due = {"decided": False, "wait_until": {"$lte": now}, "cause_event_id": {"$ne": None}}
        cursor = self.acks.find(due).limit(limit)
        return [ack_of(d) async for d in cursor]

    async def told(self, acks: Sequence[Ack], now: datetime) -> None:
        """Acknowledgements decided, whole: what they waited for and what they told."""
        expire_at = now + timedelta(seconds=self.retention_s)
        await self._write(
            [
                UpdateOne(
                    {"_id": a.ticket_id},
                    {
                        "$set": {
                            "cause_event_id": a.cause_event_id,
                            "deadline": deadline_doc(a.deadline) if a.deadline else None,
                            "decided": True,
                            "position": a.position,
                            "expected_s": a.expected_s,
                            "told_at": a.told_at,
                            "recheck_at": a.recheck_at,
                            "expire_at": expire_at,
                        }
                    },
                    upsert=True,
                )
                for a in acks
            ]
        )

    async def rechecks_due(self, now: datetime, limit: int) -> list[Ack]:
        cursor = self.acks.find({"recheck_at": {"$lte": now}}).limit(limit)
        return [ack_of(d) async for d in cursor]

    async def rechecked(self, ticket_ids: Iterable[str]) -> None:
        ids = sorted(set(ticket_ids))
        if ids:
            await self.acks.update_many({"_id": {"$in": ids}}, {"$set": {"recheck_at": None}})
