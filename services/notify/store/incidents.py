"""Incidents (`incidents`, `incident_links`): the ops API's incidents and who was told.

- `incidents`: one versioned snapshot per incident (`_id` = incident id).
- `incident_links`: one document per (incident, ticket) told about it.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Protocol

from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.errors import DuplicateKeyError

from shared.contracts.incidents import Incident
from shared.mongo import Database, Document, ensure_only_indexes

COLLECTIONS = ("incidents", "incident_links")
OPEN_INCIDENT_STATUSES = ["investigating", "identified", "monitoring"]


def incident_of_doc(d: Document) -> Incident:
    return Incident.model_validate({**d, "incident_id": d["_id"]})


def incident_doc(i: Incident) -> Document:
    data = i.model_dump(mode="python", exclude={"incident_id"})
    return {"_id": i.incident_id, **data}


class IncidentStore(Protocol):
    async def ensure_indexes(self) -> None: ...
    async def get(self, incident_id: str) -> Incident | None: ...
    async def get_many(self, ids: Iterable[str]) -> dict[str, Incident]: ...
    async def open(self) -> list[Incident]: ...
    async def recent(self, since: datetime) -> list[Incident]: ...
    async def insert(self, incident: Incident) -> bool: ...
    async def replace(self, incident: Incident, expected_version: int) -> bool: ...
    async def apply(self, incident: Incident) -> Incident: ...
    async def link(self, links: Iterable[tuple[str, str]], now: datetime) -> None: ...
    async def linked_tickets(self, incident_id: str) -> list[str]: ...
    async def linked_count(self, incident_id: str) -> int: ...
    async def stats(self) -> tuple[dict[str, int], dict[str, int]]: ...


class MongoIncidentStore:
    def __init__(self, db: Database) -> None:
        self.incidents = db["incidents"]
        self.links = db["incident_links"]

    async def ensure_indexes(self) -> None:
        await ensure_only_indexes(self.incidents, [IndexModel([("status", ASCENDING)])])  # open
        # linked_tickets, linked_count
        await ensure_only_indexes(self.links, [IndexModel([("incident_id", ASCENDING)])])

    async def get(self, incident_id: str) -> Incident | None:
        d = await self.incidents.find_one({"_id": incident_id})
        return incident_of_doc(d) if d else None

    async def get_many(self, ids: Iterable[str]) -> dict[str, Incident]:
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        return {
            d["_id"]: incident_of_doc(d)
            async for d in self.incidents.find({"_id": {"$in": wanted}})
        }

    async def open(self) -> list[Incident]:
        cursor = self.incidents.find({"status": {"$in": OPEN_INCIDENT_STATUSES}})
        return [incident_of_doc(d) async for d in cursor]

    async def recent(self, since: datetime) -> list[Incident]:
        cursor = self.incidents.find(
            {"$or": [{"status": {"$in": OPEN_INCIDENT_STATUSES}}, {"updated_at": {"$gte": since}}]}
        )
        return [incident_of_doc(d) async for d in cursor]

    async def insert(self, incident: Incident) -> bool:
        try:
            await self.incidents.insert_one(incident_doc(incident))
        except DuplicateKeyError:
            return False
        return True

    async def replace(self, incident: Incident, expected_version: int) -> bool:
        result = await self.incidents.replace_one(
            {"_id": incident.incident_id, "version": expected_version}, incident_doc(incident)
        )
        return result.modified_count == 1

    async def apply(self, incident: Incident) -> Incident:
        """Store the snapshot unless a newer version is stored; return the newest."""
        # A duplicate key: a newer (or the same) version is stored.
        with contextlib.suppress(DuplicateKeyError):
            await self.incidents.replace_one(
                {"_id": incident.incident_id, "version": {"$lt": incident.version}},
                incident_doc(incident),
                upsert=True,
            )
        current = await self.get(incident.incident_id)
        return current if current and current.version > incident.version else incident

    async def link(self, links: Iterable[tuple[str, str]], now: datetime) -> None:
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

    async def linked_tickets(self, incident_id: str) -> list[str]:
        return [d["ticket_id"] async for d in self.links.find({"incident_id": incident_id})]

    async def linked_count(self, incident_id: str) -> int:
        return await self.links.count_documents({"incident_id": incident_id})

    async def stats(self) -> tuple[dict[str, int], dict[str, int]]:
        """(open incidents by severity, tickets linked to open incidents by severity)."""
        by_severity: dict[str, int] = defaultdict(int)
        linked: dict[str, int] = defaultdict(int)
        for inc in await self.open():
            by_severity[inc.severity] += 1
            linked[inc.severity] += await self.linked_count(inc.incident_id)
        return by_severity, linked
