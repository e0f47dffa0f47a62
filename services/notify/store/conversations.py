"""Conversations (`notify_conversations`): where a reply goes, and what the messages said.

One document per conversation (`_id` = conversation id), shaped in route.py: the newest
message's route, and the assets and networks every message named (incidents match on
them). Gone after the retention period (`expire_at`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from pymongo import IndexModel, UpdateOne

from services.notify.decide import Facts, facts_of
from services.notify.route import Route, RouteUpdate, route_of
from shared.mongo import Database, Document, ensure_only_indexes

COLLECTIONS = ("notify_conversations",)


class ConversationStore(Protocol):
    async def ensure_indexes(self) -> None: ...
    async def save(self, updates: Sequence[RouteUpdate]) -> None: ...
    async def routes(self, conversation_ids: Iterable[str]) -> dict[str, Route]: ...
    async def facts(self, conversation_ids: Iterable[str | None]) -> dict[str, Facts]: ...


class MongoConversationStore:
    def __init__(self, db: Database) -> None:
        self.conversations = db["notify_conversations"]

    async def ensure_indexes(self) -> None:
        await ensure_only_indexes(
            self.conversations, [IndexModel("expire_at", expireAfterSeconds=0)]
        )

    async def save(self, updates: Sequence[RouteUpdate]) -> None:
        if not updates:
            return
        ids = [u.conversation_id for u in updates]
        stored = {
            d["_id"]: d.get("last_sent_at")
            async for d in self.conversations.find({"_id": {"$in": ids}}, {"last_sent_at": 1})
        }
        ops = []
        for u in updates:
            update: Document = {}
            last = stored.get(u.conversation_id)
            if u.conversation_id not in stored or last is None or last <= u.sent_at:
                update["$set"] = u.latest
            add = {}
            if u.assets:
                add["assets"] = {"$each": sorted(u.assets)}
            if u.networks:
                add["networks"] = {"$each": sorted(u.networks)}
            if add:
                update["$addToSet"] = add
            if update:
                ops.append(UpdateOne({"_id": u.conversation_id}, update, upsert=True))
        if ops:
            await self.conversations.bulk_write(ops, ordered=False)

    async def routes(self, conversation_ids: Iterable[str]) -> dict[str, Route]:
        ids = sorted(set(conversation_ids))
        if not ids:
            return {}
        cursor = self.conversations.find({"_id": {"$in": ids}, "channel": {"$exists": True}})
        return {d["_id"]: route_of(d) async for d in cursor}

    async def facts(self, conversation_ids: Iterable[str | None]) -> dict[str, Facts]:
        ids = sorted({c for c in conversation_ids if c})
        if not ids:
            return {}
        cursor = self.conversations.find({"_id": {"$in": ids}}, {"assets": 1, "networks": 1})
        return {d["_id"]: facts_of(d) async for d in cursor}
