"""Notify's MongoDB collections, and the outbox's claim protocol.

- `notifications`: the outbox, one document per cause (`_id` = notification id):
      {"ticket_id", "customer_id", "conversation_id", "channel", "template", "cause",
       "language", "subject", "text", "priority", "urgent", "incident_id",
       "cause_event_id", "status": "pending" | "sending" | "sent" | "dead" | "merged",
       "attempts", "waits", "next_at", "created_at", "claim_id", "owner",
       "lease_until", "sent_at", "last_error", "merged_into"}
- `notify_tickets`: notify's view of each ticket (state, language, conversation, seq).
- `notify_conversations`: the route and facts per conversation (see route.py).
- `incidents`: the incidents API's documents (`_id` = incident id, a versioned snapshot).
- `incident_links`: one document per (incident, ticket) told about it.

Claim protocol (several notify replicas may run): a sender reads due documents, then
claims each with `update_one` whose filter holds the state it read (status and
claim id — compare-and-set); only one replica's update matches. A claim sets the owner,
a fresh claim id and a lease; finishing (sent, retry later, dead) is again a
compare-and-set on that claim id, so a sender whose lease ran out cannot overwrite the
work of the replica that took over. A claim whose lease expired (its sender died) is
due again: delivery is at least once, and the receiver dedupes on the notification id
(SMTP Message-ID, webhook Idempotency-Key).
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from pymongo import ASCENDING, InsertOne, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.notify.decide import Facts, Spec, TicketView, facts_of
from services.notify.render import Rendered
from services.notify.route import Route, RouteUpdate, route_of
from shared.contracts.incidents import Incident
from shared.mongo import DUPLICATE_KEY, Database, Document

# The collections notify owns in its own database.
COLLECTIONS: tuple[str, ...] = (
    "notifications",
    "notify_tickets",
    "notify_conversations",
    "incidents",
    "incident_links",
)

OPEN_INCIDENT_STATUSES = ["investigating", "identified", "monitoring"]


def notification_doc(spec: Spec, rendered: Rendered, now: datetime) -> Document:
    return {
        "_id": spec.notification_id,
        "ticket_id": spec.ticket_id,
        "customer_id": spec.customer_id,
        "conversation_id": spec.conversation_id,
        "channel": spec.channel,
        "template": spec.template,
        "cause": spec.cause,
        "language": rendered.language,
        "subject": rendered.subject,
        "text": rendered.text,
        "priority": spec.priority,
        "urgent": spec.urgent,
        "incident_id": spec.incident_id,
        "cause_event_id": spec.cause_event_id,
        "status": "pending",
        "attempts": 0,
        "waits": 0,
        "next_at": now,
        "created_at": now,
        "claim_id": None,
        "owner": None,
        "lease_until": None,
        "sent_at": None,
        "last_error": None,
    }


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
    )


def incident_of_doc(d: Document) -> Incident:
    return Incident.model_validate({**d, "incident_id": d["_id"]})


def incident_doc(i: Incident) -> Document:
    data = i.model_dump(mode="python", exclude={"incident_id"})
    return {"_id": i.incident_id, **data}


class NotifyStore(Protocol):
    async def ensure_indexes(self) -> None: ...

    # -- inputs ------------------------------------------------------------------------
    async def save_routes(self, updates: Sequence[RouteUpdate]) -> None: ...
    async def get_views(self, ticket_ids: Iterable[str]) -> dict[str, TicketView]: ...
    async def save_views(self, views: Iterable[TicketView], now: datetime) -> None: ...
    async def queued_counts(self) -> dict[str, int]: ...
    async def get_facts(self, conversation_ids: Iterable[str | None]) -> dict[str, Facts]: ...
    async def anti_phishing_codes(self, customer_ids: Iterable[str]) -> dict[str, str]: ...
    async def add_notifications(self, docs: Sequence[Document]) -> set[str]: ...
    async def merge_pending(self, ids: Iterable[str], into: dict[str, str]) -> None: ...
    async def add_links(self, links: Iterable[tuple[str, str]], now: datetime) -> None: ...

    # -- incidents -----------------------------------------------------------------------
    async def get_incident(self, incident_id: str) -> Incident | None: ...
    async def get_incidents(self, ids: Iterable[str]) -> dict[str, Incident]: ...
    async def open_incidents(self) -> list[Incident]: ...
    async def recent_incidents(self, since: datetime) -> list[Incident]: ...
    async def insert_incident(self, incident: Incident) -> bool: ...
    async def replace_incident(self, incident: Incident, expected_version: int) -> bool: ...
    async def apply_incident(self, incident: Incident) -> Incident: ...
    async def open_views(self, categories: Sequence[str]) -> list[TicketView]: ...
    async def linked_views(self, incident_id: str) -> list[TicketView]: ...
    async def linked_count(self, incident_id: str) -> int: ...

    # -- delivery ------------------------------------------------------------------------
    async def due(self, now: datetime, limit: int) -> list[Document]: ...
    async def routes(self, conversation_ids: Iterable[str]) -> dict[str, Route]: ...
    async def sent_times(
        self, customer_ids: Iterable[str], since: datetime
    ) -> dict[str, list[datetime]]: ...
    async def claim(
        self, doc: Document, owner: str, claim_id: str, lease_until: datetime
    ) -> bool: ...
    async def defer(self, doc: Document, next_at: datetime, reason: str) -> bool: ...
    async def mark_sent(self, nid: str, claim_id: str, now: datetime) -> bool: ...
    async def release(self, nid: str, claim_id: str, next_at: datetime, reason: str) -> bool: ...
    async def mark_dead(self, nid: str, claim_id: str, reason: str, now: datetime) -> bool: ...
    async def mark_merged(self, doc: Document, into: str) -> bool: ...
    async def outbox_stats(self, now: datetime) -> tuple[int, float]: ...
    async def incident_stats(self) -> tuple[dict[str, int], dict[str, int]]: ...


def _observed(doc: Document) -> Document:
    """The filter of a compare-and-set: the state this sender read."""
    return {"_id": doc["_id"], "status": doc["status"], "claim_id": doc.get("claim_id")}


class MongoNotifyStore:
    def __init__(
        self, db: Database, retention_s: float = 90 * 86400, queued_ttl_s: float = 1.0
    ) -> None:
        self.db = db
        self.retention_s = retention_s
        self.queued_ttl_s = queued_ttl_s
        self._queued: tuple[float, dict[str, int]] | None = None
        self.notifications = db["notifications"]
        self.tickets = db["notify_tickets"]
        self.conversations = db["notify_conversations"]
        self.incidents = db["incidents"]
        self.links = db["incident_links"]
        self.customers = db["customers"]

    async def ensure_indexes(self) -> None:
        await self.notifications.create_index([("status", ASCENDING), ("next_at", ASCENDING)])
        await self.notifications.create_index([("status", ASCENDING), ("lease_until", ASCENDING)])
        await self.notifications.create_index([("customer_id", ASCENDING), ("sent_at", ASCENDING)])
        # Every secondary index costs SecantusDB ~0.1 ms on each write of the outbox's
        # hottest collection; no query reads notifications by ticket, so that one goes.
        if "ticket_id_1" in await self.notifications.index_information():
            await self.notifications.drop_index("ticket_id_1")
        await self.tickets.create_index([("open", ASCENDING), ("category", ASCENDING)])
        await self.tickets.create_index([("state", ASCENDING), ("priority", ASCENDING)])
        await self.tickets.create_index("expire_at", expireAfterSeconds=0)
        await self.conversations.create_index("expire_at", expireAfterSeconds=0)
        await self.incidents.create_index([("status", ASCENDING)])
        await self.links.create_index([("incident_id", ASCENDING)])

    # -- inputs --------------------------------------------------------------------------

    async def save_routes(self, updates: Sequence[RouteUpdate]) -> None:
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

    async def get_views(self, ticket_ids: Iterable[str]) -> dict[str, TicketView]:
        ids = sorted(set(ticket_ids))
        if not ids:
            return {}
        return {d["_id"]: view_of_doc(d) async for d in self.tickets.find({"_id": {"$in": ids}})}

    async def save_views(self, views: Iterable[TicketView], now: datetime) -> None:
        # Only a newer sequence replaces a view (a redelivered event never rolls it back).
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

    async def queued_counts(self) -> dict[str, int]:
        """Queued tickets by priority, for "about N ahead of you" estimates.

        The count reads every queued ticket, so it is kept for `queued_ttl_s`: once per
        batch, 10,000 queued tickets (an incident surge) made it the store's heaviest read
        at the moment the store was busiest. An estimate a second old is as good.
        """
        now = time.monotonic()
        if self._queued is None or now - self._queued[0] >= self.queued_ttl_s:
            cursor = await self.tickets.aggregate(
                [
                    {"$match": {"state": "queued"}},
                    {"$group": {"_id": "$priority", "n": {"$sum": 1}}},
                ]
            )
            self._queued = (now, {d["_id"]: int(d["n"]) async for d in cursor})
        return dict(self._queued[1])

    async def get_facts(self, conversation_ids: Iterable[str | None]) -> dict[str, Facts]:
        ids = sorted({c for c in conversation_ids if c})
        if not ids:
            return {}
        cursor = self.conversations.find({"_id": {"$in": ids}}, {"assets": 1, "networks": 1})
        return {d["_id"]: facts_of(d) async for d in cursor}

    async def anti_phishing_codes(self, customer_ids: Iterable[str]) -> dict[str, str]:
        ids = sorted(set(customer_ids))
        if not ids:
            return {}
        cursor = self.customers.find(
            {"_id": {"$in": ids}, "anti_phishing_code": {"$type": "string"}},
            {"anti_phishing_code": 1},
        )
        return {d["_id"]: d["anti_phishing_code"] async for d in cursor}

    async def add_notifications(self, docs: Sequence[Document]) -> set[str]:
        """Insert notifications not seen before; return the ids that were new."""
        if not docs:
            return set()
        try:
            await self.notifications.bulk_write([InsertOne(d) for d in docs], ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            dup = {docs[e["index"]]["_id"] for e in errors if e.get("code") == DUPLICATE_KEY}
            if len(dup) != len(errors):
                raise
            return {d["_id"] for d in docs} - dup
        return {d["_id"] for d in docs}

    async def merge_pending(self, ids: Iterable[str], into: dict[str, str]) -> None:
        for nid in ids:
            await self.notifications.update_one(
                {"_id": nid, "status": "pending", "claim_id": None},
                {"$set": {"status": "merged", "merged_into": into.get(nid)}},
            )

    async def add_links(self, links: Iterable[tuple[str, str]], now: datetime) -> None:
        pairs = sorted(set(links))
        if not pairs:
            return
        ops = [
            UpdateOne(
                {"_id": f"{iid}:{tid}"},
                {"$setOnInsert": {"incident_id": iid, "ticket_id": tid, "linked_at": now}},
                upsert=True,
            )
            for iid, tid in pairs
        ]
        await self.links.bulk_write(ops, ordered=False)
        by_ticket: dict[str, set[str]] = defaultdict(set)
        for iid, tid in pairs:
            by_ticket[tid].add(iid)
        await self.tickets.bulk_write(
            [
                UpdateOne({"_id": tid}, {"$addToSet": {"incidents": {"$each": sorted(iids)}}})
                for tid, iids in by_ticket.items()
            ],
            ordered=False,
        )

    # -- incidents -----------------------------------------------------------------------

    async def get_incident(self, incident_id: str) -> Incident | None:
        d = await self.incidents.find_one({"_id": incident_id})
        return incident_of_doc(d) if d else None

    async def get_incidents(self, ids: Iterable[str]) -> dict[str, Incident]:
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        return {
            d["_id"]: incident_of_doc(d)
            async for d in self.incidents.find({"_id": {"$in": wanted}})
        }

    async def open_incidents(self) -> list[Incident]:
        cursor = self.incidents.find({"status": {"$in": OPEN_INCIDENT_STATUSES}})
        return [incident_of_doc(d) async for d in cursor]

    async def recent_incidents(self, since: datetime) -> list[Incident]:
        cursor = self.incidents.find(
            {"$or": [{"status": {"$in": OPEN_INCIDENT_STATUSES}}, {"updated_at": {"$gte": since}}]}
        )
        return [incident_of_doc(d) async for d in cursor]

    async def insert_incident(self, incident: Incident) -> bool:
        try:
            await self.incidents.insert_one(incident_doc(incident))
        except DuplicateKeyError:
            return False
        return True

    async def replace_incident(self, incident: Incident, expected_version: int) -> bool:
        result = await self.incidents.replace_one(
            {"_id": incident.incident_id, "version": expected_version}, incident_doc(incident)
        )
        return result.modified_count == 1

    async def apply_incident(self, incident: Incident) -> Incident:
        """Store the snapshot unless a newer version is stored; return the newest."""
        # A duplicate key: a newer (or the same) version is stored.
        with contextlib.suppress(DuplicateKeyError):
            await self.incidents.replace_one(
                {"_id": incident.incident_id, "version": {"$lt": incident.version}},
                incident_doc(incident),
                upsert=True,
            )
        current = await self.get_incident(incident.incident_id)
        return current if current and current.version > incident.version else incident

    async def open_views(self, categories: Sequence[str]) -> list[TicketView]:
        query: Document = {"open": True}
        if categories:
            query["category"] = {"$in": list(categories)}
        return [view_of_doc(d) async for d in self.tickets.find(query)]

    async def linked_views(self, incident_id: str) -> list[TicketView]:
        ids = [d["ticket_id"] async for d in self.links.find({"incident_id": incident_id})]
        return list((await self.get_views(ids)).values())

    async def linked_count(self, incident_id: str) -> int:
        return await self.links.count_documents({"incident_id": incident_id})

    # -- delivery ------------------------------------------------------------------------

    async def due(self, now: datetime, limit: int) -> list[Document]:
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
        return pending + expired

    async def routes(self, conversation_ids: Iterable[str]) -> dict[str, Route]:
        ids = sorted(set(conversation_ids))
        if not ids:
            return {}
        cursor = self.conversations.find({"_id": {"$in": ids}, "channel": {"$exists": True}})
        return {d["_id"]: route_of(d) async for d in cursor}

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

    async def claim(self, doc: Document, owner: str, claim_id: str, lease_until: datetime) -> bool:
        result = await self.notifications.update_one(
            _observed(doc),
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

    async def defer(self, doc: Document, next_at: datetime, reason: str) -> bool:
        result = await self.notifications.update_one(
            _observed(doc),
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

    async def mark_merged(self, doc: Document, into: str) -> bool:
        result = await self.notifications.update_one(
            _observed(doc),
            {"$set": {"status": "merged", "merged_into": into, "lease_until": None}},
        )
        return result.modified_count == 1

    async def outbox_stats(self, now: datetime) -> tuple[int, float]:
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

    async def incident_stats(self) -> tuple[dict[str, int], dict[str, int]]:
        """(open incidents by severity, tickets linked to open incidents by severity)."""
        by_severity: dict[str, int] = defaultdict(int)
        linked: dict[str, int] = defaultdict(int)
        for inc in await self.open_incidents():
            by_severity[inc.severity] += 1
            linked[inc.severity] += await self.linked_count(inc.incident_id)
        return by_severity, linked
