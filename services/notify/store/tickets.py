"""Ticket views (`notify_tickets`): notify's own view of each ticket, folded from
`support.tickets` (decide.py `TicketView`), and the queue it reads positions from.

Only a newer sequence replaces a view (a redelivered event never rolls it back); a
resolved ticket's view goes after the retention period (`expire_at`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.errors import BulkWriteError

from services.notify.decide import TicketView
from services.notify.estimate import Queued, tier_rank
from shared.mongo import DUPLICATE_KEY, Database, Document, ensure_only_indexes

COLLECTIONS = ("notify_tickets",)


def view_doc(v: TicketView, now: datetime, retention_s: float) -> Document:
    return {
        "customer_id": v.customer_id,
        "conversation_id": v.conversation_id,
        "channel": v.channel,
        "category": v.category,
        "priority": v.priority,
        "language": v.language,
        "state": v.state,
        "open": v.open,
        "seq": v.seq,
        "cycle": v.cycle,
        "agent_told": v.agent_told,
        "opened_at": v.opened_at,
        "updated_at": v.updated_at,
        "customer_tier": v.customer_tier,
        "queued_since": v.queued_since,
        "position": v.position,
        "possible_urgent": v.possible_urgent,
        # Resolved tickets' views go after the retention period.
        "expire_at": None if v.open else now + timedelta(seconds=retention_s),
    }


def view_of_doc(d: Document) -> TicketView:
    return TicketView(
        ticket_id=d["_id"],
        customer_id=d["customer_id"],
        conversation_id=d.get("conversation_id"),
        channel=d["channel"],
        category=d["category"],
        priority=d["priority"],
        language=d["language"],
        state=d["state"],
        seq=d["seq"],
        opened_at=d["opened_at"],
        updated_at=d["updated_at"],
        cycle=d.get("cycle", 1),
        agent_told=d.get("agent_told", 0),
        customer_tier=d.get("customer_tier", "standard"),
        queued_since=d.get("queued_since"),
        position=d.get("position"),
        possible_urgent=d.get("possible_urgent"),
    )


class TicketStore(Protocol):
    async def ensure_indexes(self) -> None: ...
    async def get(self, ticket_ids: Iterable[str]) -> dict[str, TicketView]: ...
    async def save(self, views: Iterable[TicketView], now: datetime) -> None: ...
    async def queued(self) -> dict[str, Queued]: ...
    async def open_views(self, categories: Sequence[str]) -> list[TicketView]: ...


class MongoTicketStore:
    def __init__(
        self, db: Database, retention_s: float = 90 * 86400, queued_ttl_s: float = 1.0
    ) -> None:
        self.tickets = db["notify_tickets"]
        self.retention_s = retention_s
        self.queued_ttl_s = queued_ttl_s
        self._queued: tuple[float, dict[str, Queued]] | None = None

    async def ensure_indexes(self) -> None:
        await ensure_only_indexes(
            self.tickets,
            [
                IndexModel([("open", ASCENDING), ("category", ASCENDING)]),  # open_views
                IndexModel([("state", ASCENDING), ("priority", ASCENDING)]),  # queued
                IndexModel("expire_at", expireAfterSeconds=0),
            ],
        )

    async def get(self, ticket_ids: Iterable[str]) -> dict[str, TicketView]:
        ids = sorted(set(ticket_ids))
        if not ids:
            return {}
        return {d["_id"]: view_of_doc(d) async for d in self.tickets.find({"_id": {"$in": ids}})}

    async def save(self, views: Iterable[TicketView], now: datetime) -> None:
        views = list(views)
        ops = [
            UpdateOne(
                {"_id": v.ticket_id, "seq": {"$lt": v.seq}},
                {"$set": view_doc(v, now, self.retention_s)},
                upsert=True,
            )
            for v in views
        ]
        if not ops:
            return
        try:
            await self.tickets.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            # A duplicate key is the upsert of a view already at a newer sequence: fine.
            if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise
        if self._queued is not None:
            # This replica's own changes show in its next positions at once.
            cached = self._queued[1]
            for v in views:
                if v.state == "queued" and (q := v.queued) is not None:
                    cached[v.ticket_id] = q
                else:
                    cached.pop(v.ticket_id, None)

    async def queued(self) -> dict[str, Queued]:
        """Tickets waiting for an agent: ticket id -> (priority, queued since, tier).

        Reading every queued ticket is the store's heaviest read when the store is busiest
        (10,000 queued in a surge), so it is kept for `queued_ttl_s`, with this replica's
        own changes applied as it saves them: positions a second old are as good.
        """
        now = time.monotonic()
        if self._queued is None or now - self._queued[0] >= self.queued_ttl_s:
            fields = {"priority": 1, "queued_since": 1, "opened_at": 1, "customer_tier": 1}
            cursor = self.tickets.find({"state": "queued"}, fields)
            self._queued = (
                now,
                {
                    d["_id"]: Queued(
                        d["priority"],
                        d.get("queued_since") or d["opened_at"],
                        tier_rank(d.get("customer_tier") or "standard"),
                    )
                    async for d in cursor
                },
            )
        return dict(self._queued[1])

    async def open_views(self, categories: Sequence[str]) -> list[TicketView]:
        query: Document = {"open": True}
        if categories:
            query["category"] = {"$in": list(categories)}
        return [view_of_doc(d) async for d in self.tickets.find(query)]


async def current_views(
    store: TicketStore, ticket_ids: Iterable[str], batch: Mapping[str, TicketView]
) -> dict[str, TicketView]:
    """These tickets' views: this batch's own where it changed them, else as stored."""
    ids = set(ticket_ids)
    views = await store.get(ids - set(batch))
    views.update({t: v for t, v in batch.items() if t in ids})
    return views
