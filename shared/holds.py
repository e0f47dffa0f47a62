"""Legal holds as each service knows them: its own copy, from `support.erasures`.

Ingest owns holds (`PUT /v1/customers/{id}/hold`) and publishes every change as a
`LegalHoldChanged`; every service keeps the latest per customer in its own database
(`legal_holds`: {"_id": customer_id, "hold": bool, "version": int, "at": datetime}) and
its retention sweeper and erasure skip the customers held there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from shared.contracts.erasures import LegalHoldChanged
from shared.mongo import DUPLICATE_KEY, Database

COLLECTION = "legal_holds"


class Holds(Protocol):
    async def apply(self, changes: Sequence[LegalHoldChanged]) -> None: ...

    async def held(self, customer_ids: Iterable[str] | None = None) -> set[str]:
        """The held customers (among `customer_ids`, or all of them)."""
        ...


class MongoHolds:
    def __init__(self, db: Database) -> None:
        self.holds = db[COLLECTION]

    async def apply(self, changes: Sequence[LegalHoldChanged]) -> None:
        # Only a newer version replaces a hold: a redelivered change never rolls one back.
        ops = [
            UpdateOne(
                {"_id": c.customer_id, "version": {"$lt": c.version}},
                {"$set": {"hold": c.hold, "version": c.version, "at": c.at}},
                upsert=True,
            )
            for c in changes
        ]
        if not ops:
            return
        try:
            await self.holds.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            # A duplicate key is the upsert of a hold already at a newer version: fine.
            if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise

    async def held(self, customer_ids: Iterable[str] | None = None) -> set[str]:
        query: dict[str, object] = {"hold": True}
        if customer_ids is not None:
            query["_id"] = {"$in": sorted(set(customer_ids))}
        return {str(d["_id"]) async for d in self.holds.find(query, {"_id": 1})}


@dataclass
class MemoryHolds:
    """Holds in memory: tests and in-memory service builds."""

    versions: dict[str, tuple[int, bool]] = field(default_factory=dict)

    async def apply(self, changes: Sequence[LegalHoldChanged]) -> None:
        for c in changes:
            seen = self.versions.get(c.customer_id)
            if seen is None or seen[0] < c.version:
                self.versions[c.customer_id] = (c.version, c.hold)

    async def held(self, customer_ids: Iterable[str] | None = None) -> set[str]:
        ids = set(self.versions) if customer_ids is None else set(customer_ids)
        return {c for c in ids if self.versions.get(c, (0, False))[1]}
