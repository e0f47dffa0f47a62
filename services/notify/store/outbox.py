"""The outbox (`notifications`): one document per cause, held by the process that sends it.

A document (`_id` = notification id) is a `Notification`; `status` is
"pending" | "sending" | "sent" | "dead" | "merged".

Who sends what (several notify replicas may run): the consumer that records a notification
inserts it already claimed — "sending", with its process as `owner`, its `claim_id` and a
lease (`due_at`) — and hands it to its own sender, so the normal path has no claim write.
The sender keeps what it holds in memory and writes what each round did (sent, deferred,
retrying, dead, merged) in one bulk statement, each a compare-and-set on its claim id: a
sender whose lease ran out cannot overwrite the work of the replica that took over. It
renews the lease of what it still holds before the lease runs out. A sweeper takes over
only what no live process holds: "sending" past its lease (its sender died; the lost try
counts as an attempt) and "pending" ones (recorded where no sender runs) that are due.
Delivery is at least once; the receiver dedupes on the notification id (SMTP Message-ID,
webhook Idempotency-Key).

`due_at` is when a sweeper may take the document: the end of the lease while it is held,
the time it is due while it is pending. One `(status, due_at)` index serves the sweeper;
`(customer_id, sent_at)` serves the rate limit (and an erasure's lookup by customer).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from pymongo import ASCENDING, IndexModel, InsertOne, UpdateOne
from pymongo.errors import BulkWriteError

from shared.mongo import DUPLICATE_KEY, Database, Document, ensure_only_indexes

COLLECTIONS = ("notifications",)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# What a round of the sender changes in a notification it holds.
MUTABLE = ("status", "attempts", "waits", "next_at", "due_at", "sent_at", "last_error")


@dataclass(frozen=True)
class Notification:
    """One notification to a customer, from recording to delivery."""

    notification_id: str
    ticket_id: str
    customer_id: str
    conversation_id: str | None
    channel: str
    template: str
    cause: str
    language: str
    subject: str
    text: str
    priority: str
    cause_event_id: str
    created_at: datetime
    next_at: datetime  # when its sender acts on it next (send, retry)
    urgent: bool = False
    incident_id: str | None = None
    status: str = "pending"
    attempts: int = 0
    waits: int = 0
    claim_id: str | None = None
    owner: str | None = None
    due_at: datetime | None = None  # when a sweeper may take it (see the module's text)
    sent_at: datetime | None = None
    last_error: str | None = None
    merged_into: str | None = None
    # What an acknowledgement or correction told: the queue position and the estimate.
    position: int | None = None
    expected_s: float | None = None


_FIELDS = {f.name for f in dataclasses.fields(Notification)}


def notification_doc(n: Notification) -> Document:
    d = dataclasses.asdict(n)
    return {"_id": d.pop("notification_id"), **d}


def notification_of(d: Document) -> Notification:
    data: dict[str, Any] = {k: v for k, v in d.items() if k in _FIELDS}
    return Notification(notification_id=d["_id"], **data)


class OutboxStore(Protocol):
    async def ensure_indexes(self) -> None: ...
    async def add(self, notifications: Sequence[Notification]) -> set[str]: ...
    async def merge(self, into: dict[str, str], held: Collection[str], claim_id: str) -> None: ...
    async def take_over(
        self, now: datetime, owner: str, claim_id: str, lease_until: datetime, limit: int
    ) -> list[Notification]: ...
    async def renew(self, ids: Collection[str], claim_id: str, lease_until: datetime) -> int: ...
    async def write(self, changed: Sequence[Notification], claim_id: str) -> int: ...
    async def held(self, ids: Collection[str], claim_id: str) -> set[str]: ...
    async def sent_times(
        self, customer_ids: Iterable[str], since: datetime
    ) -> dict[str, list[datetime]]: ...
    async def stats(self, now: datetime) -> tuple[int, float]: ...


class MongoOutboxStore:
    def __init__(self, db: Database) -> None:
        self.notifications = db["notifications"]

    async def ensure_indexes(self) -> None:
        # Documents written before `due_at` existed are due to the sweeper at once.
        await self.notifications.update_many(
            {"status": {"$in": ["pending", "sending"]}, "due_at": {"$exists": False}},
            {"$set": {"due_at": EPOCH}},
        )
        await ensure_only_indexes(
            self.notifications,
            [
                IndexModel([("status", ASCENDING), ("due_at", ASCENDING)]),
                IndexModel([("customer_id", ASCENDING), ("sent_at", ASCENDING)]),
            ],
        )

    async def add(self, notifications: Sequence[Notification]) -> set[str]:
        """Insert notifications not seen before; return the ids that were new."""
        if not notifications:
            return set()
        docs = [notification_doc(n) for n in notifications]
        try:
            await self.notifications.bulk_write([InsertOne(d) for d in docs], ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            dup = {docs[e["index"]]["_id"] for e in errors if e.get("code") == DUPLICATE_KEY}
            if len(dup) != len(errors):
                raise
            return {d["_id"] for d in docs} - dup
        return {d["_id"] for d in docs}

    async def merge(self, into: dict[str, str], held: Collection[str], claim_id: str) -> None:
        """Merge notifications not sent yet into others (id -> id of the one it joins):
        those this process holds (`held`, under `claim_id`) and those still pending."""
        ops = [
            UpdateOne(
                {"_id": nid, "status": "sending", "claim_id": claim_id}
                if nid in held
                else {"_id": nid, "status": "pending"},
                {"$set": {"status": "merged", "merged_into": other, "due_at": None}},
            )
            for nid, other in sorted(into.items())
        ]
        if ops:
            await self.notifications.bulk_write(ops, ordered=False)

    async def take_over(
        self, now: datetime, owner: str, claim_id: str, lease_until: datetime, limit: int
    ) -> list[Notification]:
        """Claim what no live process holds: pending ones that are due, and held ones whose
        lease ran out (their sender died mid-try: that try counts as an attempt)."""
        claim = {"status": "sending", "owner": owner, "claim_id": claim_id, "due_at": lease_until}
        taken: list[str] = []
        for status, inc in (("pending", 0), ("sending", 1)):
            due = {"status": status, "due_at": {"$lte": now}}
            ids = [d["_id"] async for d in self.notifications.find(due, {"_id": 1}).limit(limit)]
            if not ids:
                continue
            # Compare-and-set: a replica that claimed one in between moved its `due_at`.
            await self.notifications.update_many(
                {"_id": {"$in": ids}, **due}, {"$set": claim, "$inc": {"attempts": inc}}
            )
            taken += ids
        if not taken:
            return []
        cursor = self.notifications.find({"_id": {"$in": taken}, "claim_id": claim_id})
        return [notification_of(d) async for d in cursor]

    async def renew(self, ids: Collection[str], claim_id: str, lease_until: datetime) -> int:
        """Extend the lease of what this process still holds; how many it still holds."""
        if not ids:
            return 0
        result = await self.notifications.update_many(
            {"_id": {"$in": sorted(ids)}, "status": "sending", "claim_id": claim_id},
            {"$set": {"due_at": lease_until}},
        )
        return int(result.matched_count)

    async def write(self, changed: Sequence[Notification], claim_id: str) -> int:
        """One round's outcomes, one statement: each notification's new state, where this
        process still holds it. How many it still held."""
        ops = [
            UpdateOne(
                {"_id": n.notification_id, "status": "sending", "claim_id": claim_id},
                {"$set": _changes(n)},
            )
            for n in changed
        ]
        if not ops:
            return 0
        result = await self.notifications.bulk_write(ops, ordered=False)
        return int(result.matched_count)

    async def held(self, ids: Collection[str], claim_id: str) -> set[str]:
        """Which of these this process still holds (after a write matched fewer)."""
        if not ids:
            return set()
        query = {"_id": {"$in": sorted(ids)}, "status": "sending", "claim_id": claim_id}
        return {d["_id"] async for d in self.notifications.find(query, {"_id": 1})}

    async def sent_times(
        self, customer_ids: Iterable[str], since: datetime
    ) -> dict[str, list[datetime]]:
        ids = sorted(set(customer_ids))
        out: dict[str, list[datetime]] = defaultdict(list)
        if not ids:
            return out
        cursor = self.notifications.find(
            {"customer_id": {"$in": ids}, "sent_at": {"$gte": since}},
            {"customer_id": 1, "sent_at": 1},
        )
        async for d in cursor:
            out[d["customer_id"]].append(d["sent_at"])
        return out

    async def stats(self, now: datetime) -> tuple[int, float]:
        """(notifications not finished, age of the oldest one in seconds)."""
        query = {"status": {"$in": ["pending", "sending"]}}
        depth = await self.notifications.count_documents(query)
        oldest = (
            await self.notifications.find(query, {"created_at": 1})
            .sort("created_at", ASCENDING)
            .limit(1)
            .to_list(1)
        )
        age = (now - oldest[0]["created_at"]).total_seconds() if oldest else 0.0
        return depth, max(0.0, age)


def _changes(n: Notification) -> Document:
    fields = {k: getattr(n, k) for k in MUTABLE}
    if n.status == "merged":
        fields["merged_into"] = n.merged_into
    return fields
