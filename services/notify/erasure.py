"""Notify's part of erasure and retention, on its own collections.

Erasing a customer: the notifications written to them (subjects, texts; pending ones are
never sent), the routes of their conversations (reply addresses, email threads), and its
copy of their contact facts go; its views of their tickets stay as anonymous shells
(category, priority, state, times) so queue estimates and incident counts stay true.

Retention (policy/retention.yaml), held customers skipped: finished notifications after
`notifications`, resolved incidents and their ticket links after `incidents`, the API
audit after `audit`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.consume import Decoder
from shared.contracts.erasures import ErasureRequested
from shared.erasure import ERASURE_INPUTS, erase_batch
from shared.events import OutboundEvent
from shared.holds import MongoHolds
from shared.mongo import Database
from shared.retention import RetentionPolicy, Sweep, remove_expired

ERASED = "erased"  # the customer of an anonymous shell


@dataclass
class NotifyErasure:
    db: Database
    holds: MongoHolds = field(init=False)
    decoder: Decoder = field(default_factory=lambda: Decoder("notify", ERASURE_INPUTS))

    def __post_init__(self) -> None:
        self.holds = MongoHolds(self.db)

    async def erase(self, req: ErasureRequested, now: datetime) -> dict[str, int]:
        cid = req.customer_id
        notifications = self.db["notifications"]
        views = self.db["notify_tickets"]
        conversations = {
            d["conversation_id"]
            async for d in views.find({"customer_id": cid}, {"conversation_id": 1})
            if d.get("conversation_id")
        }
        conversations |= {
            d["conversation_id"]
            async for d in notifications.find({"customer_id": cid}, {"conversation_id": 1})
            if d.get("conversation_id")
        }
        routes = await self.db["notify_conversations"].delete_many(
            {"$or": [{"customer_id": cid}, {"_id": {"$in": sorted(conversations)}}]}
        )
        sent = await notifications.delete_many({"customer_id": cid})
        shells = await views.update_many(
            {"customer_id": cid}, {"$set": {"customer_id": ERASED, "conversation_id": None}}
        )
        facts = await self.db["notify_customers"].delete_many({"_id": cid})
        return {
            "notifications": sent.deleted_count,
            "notify_conversations": routes.deleted_count,
            "notify_tickets": shells.modified_count,
            "notify_customers": facts.deleted_count,
        }

    async def process(self, records: Sequence[Any], now: datetime) -> list[OutboundEvent]:
        batch = self.decoder.decode(records, now)
        return await erase_batch(batch, now, service="notify", erase=self.erase, holds=self.holds)

    def sweeps(self, policy: RetentionPolicy) -> list[Sweep]:
        db = self.db

        async def notifications(now: datetime, limit: int) -> int:
            query = {
                "status": {"$in": ["sent", "dead", "merged"]},
                "created_at": {"$lt": policy.cutoff("notifications", now)},
            }
            return await remove_expired(
                db["notifications"], query, limit, held=await self.holds.held()
            )

        async def incidents(now: datetime, limit: int) -> int:
            query = {"status": "resolved", "resolved_at": {"$lt": policy.cutoff("incidents", now)}}
            ids = [d["_id"] async for d in db["incidents"].find(query, {"_id": 1}).limit(limit)]
            if not ids:
                return 0
            await db["incident_links"].delete_many({"incident_id": {"$in": ids}})
            removed = await db["incidents"].delete_many({"_id": {"$in": ids}, **query})
            return int(removed.deleted_count)

        async def audit(now: datetime, limit: int) -> int:
            query = {"at": {"$lt": policy.cutoff("audit", now)}}
            return await remove_expired(db["api_audit"], query, limit)

        return [
            Sweep("notifications", notifications),
            Sweep("incidents", incidents),
            Sweep("api_audit", audit),
        ]
