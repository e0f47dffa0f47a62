"""Customers (`notify_customers`): notify's own copy of what it needs to write to a
customer — tier, anti-phishing code, preferred language.

Fed by `support.messages` (each message carries the facts ingest knew when it accepted
it) and by the compacted `support.customers` (every later change; a tombstone deletes the
copy). The newest fact wins: a message's facts replace the copy only when the message is
newer than what the copy holds (`as_of`); a customer record only when its `version` is
higher than the stored one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from shared.mongo import DUPLICATE_KEY, Database, Document

COLLECTIONS = ("notify_customers",)


@dataclass(frozen=True)
class Customer:
    customer_id: str
    as_of: datetime  # when ingest knew these facts
    tier: str = "standard"
    anti_phishing_code: str | None = None
    language: str | None = None
    version: int | None = None  # support.customers' version; none: learnt from a message


class CustomerStore(Protocol):
    async def ensure_indexes(self) -> None: ...
    async def save(self, customers: Sequence[Customer]) -> None: ...
    async def delete(self, customer_ids: Iterable[str]) -> None: ...
    async def get(self, customer_ids: Iterable[str]) -> dict[str, Customer]: ...


def newest(customers: Iterable[Customer]) -> list[Customer]:
    """One per customer: the highest version, else the newest facts."""
    best: dict[str, Customer] = {}
    for c in customers:
        cur = best.get(c.customer_id)
        if cur is None or (c.version or -1, c.as_of) >= (cur.version or -1, cur.as_of):
            best[c.customer_id] = c
    return list(best.values())


class MongoCustomerStore:
    def __init__(self, db: Database) -> None:
        self.customers = db["notify_customers"]

    async def ensure_indexes(self) -> None:
        return None  # read by _id only

    async def save(self, customers: Sequence[Customer]) -> None:
        ops = []
        for c in newest(customers):
            fields: Document = {
                "tier": c.tier,
                "anti_phishing_code": c.anti_phishing_code,
                "language": c.language,
                "as_of": c.as_of,
            }
            if c.version is None:
                newer: Document = {"$or": [{"as_of": {"$lt": c.as_of}}, {"as_of": None}]}
            else:
                newer = {"$or": [{"version": {"$lt": c.version}}, {"version": None}]}
                fields["version"] = c.version
            ops.append(UpdateOne({"_id": c.customer_id, **newer}, {"$set": fields}, upsert=True))
        if not ops:
            return
        try:
            await self.customers.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            # A duplicate key is the upsert of a copy that already holds newer facts.
            if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise

    async def delete(self, customer_ids: Iterable[str]) -> None:
        ids = sorted(set(customer_ids))
        if ids:
            await self.customers.delete_many({"_id": {"$in": ids}})

    async def get(self, customer_ids: Iterable[str]) -> dict[str, Customer]:
        ids = sorted(set(customer_ids))
        if not ids:
            return {}
        return {
            d["_id"]: Customer(
                customer_id=d["_id"],
                as_of=d["as_of"],
                tier=d.get("tier") or "standard",
                anti_phishing_code=d.get("anti_phishing_code"),
                language=d.get("language"),
                version=d.get("version"),
            )
            async for d in self.customers.find({"_id": {"$in": ids}})
        }
