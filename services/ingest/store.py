"""Customers in MongoDB: identities (email, phone, handles, account UID), tier, anti-phishing code.

A customer document:
    {"_id": "cus_…", "identities": [{"kind": "email", "value": "a@b.c"}, …],
     "identity_keys": ["email:a@b.c", …],
     "tier": "standard" | "vip1".., "anti_phishing_code": "…" | None, "language": "en" | None,
     "version": 3, "created_at": …}
`version` grows with every change (1 when ingest creates the customer): the record ingest
publishes on support.customers carries it, so a consumer keeps the latest.
`identity_keys` is the same list flattened to strings: a unique multikey index on it makes
one identity belong to one customer, even with several ingest replicas racing on the same
new sender, and lets a batch's lookup be one indexed `$in`. (An `$or` of `$elemMatch` over
`identities` is a collection scan on SecantusDB: 2 s for 50 senders among 5,000 customers,
holding the store's lock — the benchmark's first bottleneck. See docs/benchmarks.md.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.ingest.customers import (
    CustomerRecord,
    CustomerRef,
    primary_identity,
)
from shared.contracts.messages import Identity
from shared.ids import customer_id
from shared.mongo import DUPLICATE_KEY, Database, Document, ensure_only_indexes

# The collections ingest owns in its own database (a trailing * names a family).
COLLECTIONS: tuple[str, ...] = ("customers", "training_examples", "classified_texts_*", "erasures")


class CustomerStore(Protocol):
    async def ensure_indexes(self) -> None: ...

    async def resolve_many(
        self, identity_sets: Sequence[tuple[Identity, ...]], now: datetime
    ) -> list[CustomerRef]: ...

    async def upsert(self, customer: CustomerRecord) -> CustomerRef:
        """Create or change a customer; returns its record as stored (version included)."""
        ...

    async def upsert_many(self, records: Sequence[CustomerRecord]) -> list[CustomerRef]: ...


def _key(identity: Identity) -> tuple[str, str]:
    return (identity.kind, identity.value)


def _keys(identities: Iterable[Document]) -> set[tuple[str, str]]:
    return {(i["kind"], i["value"]) for i in identities}


def identity_key(kind: str, value: str) -> str:
    """The indexed string form; kinds never contain ':' so the first ':' splits it."""
    return f"{kind}:{value}"


def _identity_docs(keys: Iterable[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"kind": k, "value": v} for k, v in sorted(keys)]


def _identity_keys(keys: Iterable[tuple[str, str]]) -> list[str]:
    return [identity_key(k, v) for k, v in sorted(keys)]


class MongoCustomerStore:
    def __init__(self, db: Database) -> None:
        self.customers = db["customers"]

    async def ensure_indexes(self) -> None:
        # Customers written before identity_keys existed get it once, before the index.
        backfill = [
            UpdateOne(
                {"_id": doc["_id"]},
                {"$set": {"identity_keys": _identity_keys(_keys(doc.get("identities", [])))}},
            )
            async for doc in self.customers.find(
                {"identity_keys": {"$exists": False}}, {"identities": 1}
            )
        ]
        if backfill:
            await self.customers.bulk_write(backfill, ordered=False)
        # The old compound form (`identity_unique`) goes.
        await ensure_only_indexes(
            self.customers,
            [IndexModel([("identity_keys", ASCENDING)], unique=True, name="identity_key_unique")],
        )

    async def _lookup(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], Document]:
        if not keys:
            return {}
        query = {"identity_keys": {"$in": _identity_keys(keys)}}
        found: dict[tuple[str, str], Document] = {}
        async for doc in self.customers.find(query):
            for ident in doc.get("identities", []):
                found[(ident["kind"], ident["value"])] = doc
        return found

    async def resolve_many(
        self, identity_sets: Sequence[tuple[Identity, ...]], now: datetime
    ) -> list[CustomerRef]:
        """One lookup and one bulk write per batch; links identities seen together."""
        for attempt in range(3):
            try:
                return await self._resolve_once(identity_sets, now)
            except (BulkWriteError, DuplicateKeyError):
                # Another replica created one of these customers concurrently: re-read.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _resolve_once(
        self, identity_sets: Sequence[tuple[Identity, ...]], now: datetime
    ) -> list[CustomerRef]:
        keys = {_key(i) for ids in identity_sets for i in ids}
        known = await self._lookup(keys)
        refs: list[CustomerRef] = []
        writes: dict[str, set[tuple[str, str]]] = {}
        created: dict[str, bool] = {}
        for ids in identity_sets:
            if not ids:
                refs.append(CustomerRef(customer_id("anonymous", "unknown")))
                continue
            doc = next((known[_key(i)] for i in ids if _key(i) in known), None)
            if doc is not None:
                cid = str(doc["_id"])
                ref = _ref(doc)
            else:
                primary = primary_identity(ids)
                cid = customer_id(primary.kind, primary.value)
                ref = CustomerRef(cid, new=cid not in created, version=1)
                created[cid] = True
            missing = {_key(i) for i in ids} - {
                (x["kind"], x["value"]) for x in (doc or {}).get("identities", [])
            }
            if missing or doc is None:
                writes.setdefault(cid, set()).update(missing)
            for i in ids:
                known.setdefault(
                    _key(i), doc or {"_id": cid, "identities": [], "tier": ref.tier, "version": 1}
                )
            refs.append(ref)
        if writes:
            await self.customers.bulk_write(
                [
                    UpdateOne(
                        {"_id": cid},
                        {
                            "$setOnInsert": {"tier": "standard", "created_at": now, "version": 1},
                            "$addToSet": {
                                "identities": {"$each": _identity_docs(new)},
                                "identity_keys": {"$each": _identity_keys(new)},
                            },
                            "$set": {"last_seen_at": now},
                        },
                        upsert=True,
                    )
                    for cid, new in writes.items()
                ],
                ordered=False,
            )
        return refs

    async def upsert(self, customer: CustomerRecord) -> CustomerRef:
        [ref] = await self.upsert_many([customer])
        return ref

    async def upsert_many(self, records: Sequence[CustomerRecord]) -> list[CustomerRef]:
        """Load customers from the exchange's records; returns them as stored, each with
        its new version (every load is a change: the exchange restated the customer).

        An identity that ingest already gave an automatic customer (someone wrote in before
        the import) moves to the imported customer, who keeps a `merged_from` trail. One
        lookup and one ordered bulk write for the batch: each record sees the identities
        the records before it took.
        """
        ids: list[str] = []
        keys_of = [{_key(i) for i in record.identities} for record in records]
        found = await self._lookup(set().union(*keys_of))
        owners = {key: str(doc["_id"]) for key, doc in found.items()}
        ops: list[UpdateOne] = []
        for record, keys in zip(records, keys_of, strict=True):
            primary = primary_identity(record.identities)
            cid = record.customer_id or customer_id(primary.kind, primary.value)
            others = sorted({owners[k] for k in keys if k in owners} - {cid})
            ops += [
                UpdateOne(
                    {"_id": other},
                    {
                        "$pull": {
                            "identities": {"$in": _identity_docs(keys)},
                            "identity_keys": {"$in": _identity_keys(keys)},
                        }
                    },
                )
                for other in others
            ]
            update: dict[str, Any] = {
                "$set": {
                    "tier": record.tier,
                    "anti_phishing_code": record.anti_phishing_code,
                    "language": record.language,
                },
                "$addToSet": {
                    "identities": {"$each": _identity_docs(keys)},
                    "identity_keys": {"$each": _identity_keys(keys)},
                },
            }
            if others:
                update["$addToSet"]["merged_from"] = {"$each": others}
            update["$inc"] = {"version": 1}
            ops.append(UpdateOne({"_id": cid}, update, upsert=True))
            owners.update(dict.fromkeys(keys, cid))
            ids.append(cid)
        if ops:
            await self.customers.bulk_write(ops, ordered=True)
        # One indexed read for the batch: each record as stored, at its new version.
        stored = {d["_id"]: d async for d in self.customers.find({"_id": {"$in": ids}})}
        return [_ref(stored[cid]) for cid in ids]


def _ref(doc: Document) -> CustomerRef:
    return CustomerRef(
        str(doc["_id"]),
        doc.get("tier", "standard"),
        doc.get("anti_phishing_code"),
        language=doc.get("language"),
        version=int(doc.get("version", 0)),
        legal_hold=bool(doc.get("legal_hold", False)),
    )


# --- what agents teach the classifier ---------------------------------------------------


@dataclass(frozen=True)
class ClassifiedText:
    """What ingest classified, kept so an agent's later correction can become an example."""

    message_id: str
    text: str  # subject and text, secrets already redacted
    language: str
    category: str  # as classified
    at: datetime
    customer_id: str | None = None  # whose text: an erasure removes it


@dataclass(frozen=True)
class Correction:
    """An agent's correction of a ticket's category (from a `recategorized` ticket event)."""

    ticket_id: str
    message_id: str
    category: str
    agent_id: str | None
    at: datetime


class TrainingStore(Protocol):
    async def ensure_indexes(self) -> None: ...

    async def remember(self, texts: Sequence[ClassifiedText]) -> None: ...

    async def learn(self, corrections: Sequence[Correction]) -> int: ...

    async def examples(self) -> list[Document]: ...


class MongoTrainingStore:
    """Classified texts in one collection per UTC day, and `training_examples`.

    classified_texts_YYYYMMDD: {"_id": message_id, "text", "language", "category", "at",
                                "customer_id"}
    training_examples: {"_id": ticket_id, "message_id", "text", "language",
                        "category" (the agent's), "predicted", "agent_id", "at", "customer_id"}

    Texts are kept for `texts_kept_s` so a later correction finds them. A day's texts live
    in their own collection with no secondary index: keeping one is a bulk insert at the
    cheapest price the store has, and expiry drops whole days (no TTL scan, no index to
    maintain on the per-message path). One training example per ticket: a second
    correction replaces the first.
    """

    PREFIX = "classified_texts_"

    def __init__(self, db: Database, texts_kept_s: float) -> None:
        self.db = db
        self.examples_ = db["training_examples"]
        self.texts_kept_s = texts_kept_s
        self._swept: str | None = None

    def _bucket(self, at: datetime) -> str:
        return f"{self.PREFIX}{at.strftime('%Y%m%d')}"

    async def _buckets(self) -> list[str]:
        names = await self.db.list_collection_names(filter={"name": {"$regex": f"^{self.PREFIX}"}})
        return sorted(names, reverse=True)  # newest day first

    async def ensure_indexes(self) -> None:
        return None  # one day's texts are read by _id only

    async def sweep(self, now: datetime) -> int:
        """Drop the days older than `texts_kept_s`; returns how many."""
        oldest = self._bucket(now - timedelta(seconds=self.texts_kept_s))
        dropped = 0
        for name in await self._buckets():
            if name < oldest:
                await self.db.drop_collection(name)
                dropped += 1
        return dropped

    async def remember(self, texts: Sequence[ClassifiedText]) -> None:
        if not texts:
            return
        by_day: dict[str, list[Document]] = {}
        for t in texts:
            by_day.setdefault(self._bucket(t.at), []).append(
                {
                    "_id": t.message_id,
                    "text": t.text,
                    "language": t.language,
                    "category": t.category,
                    "at": t.at,
                    "customer_id": t.customer_id,
                }
            )
        for name, docs in by_day.items():
            try:
                await self.db[name].insert_many(docs, ordered=False)
            except BulkWriteError as exc:
                # A redelivered batch: those texts are already kept. Anything else is real.
                errors = exc.details.get("writeErrors", [])
                if any(e.get("code") != DUPLICATE_KEY for e in errors):
                    raise
        today = max(by_day)
        if today != self._swept:
            self._swept = today
            await self.sweep(max(t.at for t in texts))

    async def learn(self, corrections: Sequence[Correction]) -> int:
        """Store the corrections whose message text is still kept; returns how many."""
        if not corrections:
            return 0
        wanted = {c.message_id for c in corrections}
        texts: dict[str, Document] = {}
        for name in await self._buckets():
            missing = sorted(wanted - set(texts))
            if not missing:
                break
            async for d in self.db[name].find({"_id": {"$in": missing}}):
                texts[d["_id"]] = d
        writes = []
        for c in corrections:
            kept = texts.get(c.message_id)
            if kept is None:
                continue
            writes.append(
                UpdateOne(
                    {"_id": c.ticket_id},
                    {
                        "$set": {
                            "message_id": c.message_id,
                            "text": kept["text"],
                            "language": kept["language"],
                            "predicted": kept["category"],
                            "category": c.category,
                            "agent_id": c.agent_id,
                            "at": c.at,
                            "customer_id": kept.get("customer_id"),
                        }
                    },
                    upsert=True,
                )
            )
        if writes:
            await self.examples_.bulk_write(writes, ordered=False)
        return len(writes)

    async def examples(self) -> list[Document]:
        return [d async for d in self.examples_.find({}).sort("_id", ASCENDING)]
