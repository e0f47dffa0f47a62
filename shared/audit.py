"""The API audit log: one append-only record per authenticated write request.

A record names who (key id, token subject or webhook provider), what (route template and
the ids it targeted: tickets, agents, events, incidents, message ids; a customer only as
a pseudonymous reference), the outcome and when. Never a body, a name, a text, an
address: what was written is in the service's own data and events.

    {"at": datetime, "service": "router", "caller": "jwt:alice", "client": "oidc",
     "route": "POST /v1/tickets/{ticket_id}/{action}", "outcome": "ok", "status": 202,
     "targets": {"ticket_id": "tkt_…", "action": "resolve", "agent_id": "alice",
                 "event_id": "evt_…"}, "reason": null}
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from pymongo import ASCENDING

from shared.mongo import Database, Document

COLLECTION = "api_audit"
Target = str | list[str]


def pseudonym(value: str) -> str:
    """A stable reference to a personal identifier that does not spell it out."""
    return hashlib.sha256(value.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    service: str
    caller: str
    client: str
    route: str
    outcome: str
    status: int
    targets: dict[str, Target] = field(default_factory=dict)
    reason: str | None = None

    def doc(self) -> Document:
        return {
            "at": self.at,
            "service": self.service,
            "caller": self.caller,
            "client": self.client,
            "route": self.route,
            "outcome": self.outcome,
            "status": self.status,
            "targets": dict(self.targets),
            "reason": self.reason,
        }


class AuditLog(Protocol):
    async def record(self, entry: AuditEntry) -> None: ...

    async def find_event(self, service: str, event_id: str) -> Document | None:
        """The record of the request that published `event_id`, if this service took it."""
        ...


class MongoAuditLog:
    """`api_audit` in the service's own database: inserts only, expired by a TTL index."""

    def __init__(self, db: Database, retention_days: int = 400) -> None:
        self.entries = db[COLLECTION]
        self.retention_s = retention_days * 86_400
        self._indexed = False

    async def ensure_indexes(self) -> None:
        await self.entries.create_index([("at", ASCENDING)], expireAfterSeconds=self.retention_s)
        await self.entries.create_index(
            [("targets.event_id", ASCENDING)],
            partialFilterExpression={"targets.event_id": {"$exists": True}},
        )
        self._indexed = True

    async def record(self, entry: AuditEntry) -> None:
        if not self._indexed:
            # Here rather than at start-up: every service's API gets its indexes the same way.
            await self.ensure_indexes()
        await self.entries.insert_one(entry.doc())

    async def find_event(self, service: str, event_id: str) -> Document | None:
        return await self.entries.find_one({"targets.event_id": event_id, "service": service})


@dataclass
class MemoryAuditLog:
    """The audit log in memory: tests, and services built with in-memory stores."""

    entries: list[Document] = field(default_factory=list)

    async def record(self, entry: AuditEntry) -> None:
        self.entries.append(entry.doc())

    async def find_event(self, service: str, event_id: str) -> Document | None:
        return next(
            (
                e
                for e in self.entries
                if e["service"] == service and e["targets"].get("event_id") == event_id
            ),
            None,
        )
