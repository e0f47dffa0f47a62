"""Customers (`notify_customers`): notify's own copy of what it needs to write to a
customer — tier, anti-phishing code, preferred language.

Fed by `support.messages` (each message carries the facts ingest knew when it accepted
it) and by the compacted `support.customers` (every change, versioned; a tombstone deletes
the copy). A customer record replaces the copy when its `version` is higher than the
stored one. Messages only fill in until the first record comes: their facts replace a
copy learnt from messages when they are newer (`as_of`) and differ — so most messages
cost no write, and a message delayed on its partition never undoes a change.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from shared.mongo import DUPLICATE_KEY, Database, Document, ensure_only_indexes

COLLECTIONS = ("notify_customers",)
FACTS = ("tier", "anti_phishing_code", "language")


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
        await ensure_only_indexes(self.customers, [])  # read by _id only

    async def save(self, customers: Sequence[Customer]) -> None:
        latest = newest(customers)
        if not latest:
            return
        # What is stored decides each filter: an `$or` beside `_id` makes SecantusDB scan
        # the collection (~10 ms a write at a few thousand customers), equality does not.
        ids = [c.customer_id for c in latest]
        stored = {d["_id"]: d async for d in self.customers.find({"_id": {"$in": ids}})}
        ops = []
        for c in latest:
            fields: Document = {
                "tier": c.tier,
                "anti_phishing_code": c.anti_phishing_code,
                "language": c.language,
                "as_of": c.as_of,
            }
            old = stored.get(c.customer_id)
            if c.version is not None:
                fields["version"] = c.version
            elif old is not None and (
                old.get("version") is not None
                or all(old.get(k) == fields[k] for k in FACTS)
                or old["as_of"] >= c.as_of
            ):
                continue  # the record rules, or nothing new
            if old is None:
                newer: Document = {"as_of": None}  # none yet (a racing insert wins)
            elif c.version is None:
                newer = {"as_of": {"$lt": c.as_of}}
            elif old.get("version") is None:
                newer = {"version": None}
            else:
                newer = {"version": {"$lt": c.version}}
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
