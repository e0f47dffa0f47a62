"""The outbox (`notifications`): one document per cause, and the senders' claim protocol.

A document (`_id` = notification id) is a `Notification`; `status` is
"pending" | "sending" | "sent" | "dead" | "merged".

Claim protocol (several notify replicas may run): a sender reads due notifications, then
claims each with `update_one` whose filter holds the state it read (status and claim id —
compare-and-set); only one replica's update matches. A claim sets the owner, a fresh claim
id and a lease; finishing (sent, retry later, dead) is again a compare-and-set on that
claim id, so a sender whose lease ran out cannot overwrite the work of the replica that
took over. A claim whose lease expired (its sender died) is due again: delivery is at least
once, and the receiver dedupes on the notification id (SMTP Message-ID, webhook
Idempotency-Key).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pymongo import ASCENDING, InsertOne
from pymongo.errors import BulkWriteError

from shared.mongo import DUPLICATE_KEY, Database, Document

COLLECTIONS = ("notifications",)


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
    next_at: datetime
    urgent: bool = False
    incident_id: str | None = None
    status: str = "pending"
    attempts: int = 0
    waits: int = 0
    claim_id: str | None = None
    owner: str | None = None
    lease_until: datetime | None = None
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
    async def merge_pending(self, into: dict[str, str]) -> None: ...
    async def due(self, now: datetime, limit: int) -> list[Notification]: ...
    async def sent_times(
        self, customer_ids: Iterable[str], since: datetime
    ) -> dict[str, list[datetime]]: ...
    async def claim(
        self, n: Notification, owner: str, claim_id: str, lease_until: datetime
    ) -> bool: ...
    async def defer(self, n: Notification, next_at: datetime, reason: str) -> bool: ...
    async def mark_sent(self, nid: str, claim_id: str, now: datetime) -> bool: ...
    async def release(self, nid: str, claim_id: str, next_at: datetime, reason: str) -> bool: ...
    async def mark_dead(self, nid: str, claim_id: str, reason: str, now: datetime) -> bool: ...
    async def mark_merged(self, n: Notification, into: str) -> bool: ...
    async def stats(self, now: datetime) -> tuple[int, float]: ...


def _observed(n: Notification) -> Document:
    """The filter of a compare-and-set: the state this sender read."""
    return {"_id": n.notification_id, "status": n.status, "claim_id": n.claim_id}


class MongoOutboxStore:
    def __init__(self, db: Database) -> None:
        self.notifications = db["notifications"]

    async def ensure_indexes(self) -> None:
        await self.notifications.create_index([("status", ASCENDING), ("next_at", ASCENDING)])
        await self.notifications.create_index([("status", ASCENDING), ("lease_until", ASCENDING)])
        await self.notifications.create_index([("customer_id", ASCENDING), ("sent_at", ASCENDING)])
        # Every secondary index costs SecantusDB ~0.1 ms on each write of the outbox's
        # hottest collection; no query reads notifications by ticket, so that one goes.
        if "ticket_id_1" in await self.notifications.index_information():
            await self.notifications.drop_index("ticket_id_1")

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

    async def merge_pending(self, into: dict[str, str]) -> None:
        """Merge notifications still pending into others (id -> id of the one it joins)."""
        for nid, other in into.items():
            await self.notifications.update_one(
                {"_id": nid, "status": "pending", "claim_id": None},
                {"$set": {"status": "merged", "merged_into": other}},
            )

    async def due(self, now: datetime, limit: int) -> list[Notification]:
        pending = (
            await self.notifications.find({"status": "pending", "next_at": {"$lte": now}})
            .sort("next_at", ASCENDING)
            .limit(limit)
            .to_list(limit)
        )
        # Claims whose sender died (its lease ran out) are due again.
        expired = await self.notifications.find(
            {"status": "sending", "lease_until": {"$lte": now}}
        ).to_list(limit)
        return [notification_of(d) for d in pending + expired]

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

    async def claim(
        self, n: Notification, owner: str, claim_id: str, lease_until: datetime
    ) -> bool:
        result = await self.notifications.update_one(
            _observed(n),
            {
                "$set": {
                    "status": "sending",
                    "claim_id": claim_id,
                    "owner": owner,
                    "lease_until": lease_until,
                },
                "$inc": {"attempts": 1},
            },
        )
        return result.modified_count == 1

    async def defer(self, n: Notification, next_at: datetime, reason: str) -> bool:
        result = await self.notifications.update_one(
            _observed(n),
            {
                "$set": {
                    "status": "pending",
                    "claim_id": None,
                    "lease_until": None,
                    "next_at": next_at,
                    "last_error": reason,
                },
                "$inc": {"waits": 1},
            },
        )
        return result.modified_count == 1

    async def _finish(self, nid: str, claim_id: str, fields: Document) -> bool:
        result = await self.notifications.update_one(
            {"_id": nid, "status": "sending", "claim_id": claim_id}, {"$set": fields}
        )
        return result.modified_count == 1

    async def mark_sent(self, nid: str, claim_id: str, now: datetime) -> bool:
        return await self._finish(
            nid, claim_id, {"status": "sent", "sent_at": now, "lease_until": None}
        )

    async def release(self, nid: str, claim_id: str, next_at: datetime, reason: str) -> bool:
        return await self._finish(
            nid,
            claim_id,
            {
                "status": "pending",
                "claim_id": None,
                "lease_until": None,
                "next_at": next_at,
                "last_error": reason,
            },
        )

    async def mark_dead(self, nid: str, claim_id: str, reason: str, now: datetime) -> bool:
        return await self._finish(
            nid,
            claim_id,
            {"status": "dead", "lease_until": None, "last_error": reason, "dead_at": now},
        )

    async def mark_merged(self, n: Notification, into: str) -> bool:
        result = await self.notifications.update_one(
            _observed(n),
            {"$set": {"status": "merged", "merged_into": into, "lease_until": None}},
        )
        return result.modified_count == 1

    async def stats(self, now: datetime) -> tuple[int, float]:
        """(pending notifications, age of the oldest one in seconds)."""
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
