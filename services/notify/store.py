"""Notifications in MongoDB: one document per cause (deterministic `_id`), the outbox."""

from __future__ import annotations

from typing import Protocol

from pymongo import ASCENDING, InsertOne
from pymongo.errors import BulkWriteError

from shared.mongo import Database, Document

DUPLICATE_KEY = 11000


class NotificationStore(Protocol):
    async def ensure_indexes(self) -> None: ...

    async def add_new(self, docs: list[Document]) -> set[str]: ...


class MongoNotificationStore:
    def __init__(self, db: Database) -> None:
        self.notifications = db["notifications"]

    async def ensure_indexes(self) -> None:
        await self.notifications.create_index([("status", ASCENDING), ("created_at", ASCENDING)])
        await self.notifications.create_index([("ticket_id", ASCENDING)])

    async def add_new(self, docs: list[Document]) -> set[str]:
        """Insert notifications not seen before; return the ids that were new."""
        if not docs:
            return set()
        try:
            await self.notifications.bulk_write([InsertOne(d) for d in docs], ordered=False)
        except BulkWriteError as exc:
            dup = {
                docs[e["index"]]["_id"]
                for e in exc.details.get("writeErrors", [])
                if e.get("code") == DUPLICATE_KEY
            }
            if len(dup) != len(exc.details.get("writeErrors", [])):
                raise
            return {d["_id"] for d in docs} - dup
        return {d["_id"] for d in docs}
