"""Ingest's part of erasure and legal hold: the erasure log, holds on customers, and
erasing what ingest itself keeps of a customer.

The erasure log (`erasures`), one document per request, free of the erased data — the
customer appears only as a pseudonymous reference (shared.audit.pseudonym of the id):

    {"_id": "ers_…", "customer_ref": "9f2c…", "reason": "customer request",
     "requested_by": "key:dpo", "at": datetime, "held": false,
     "services": {"ingest": {"counts": {"customers": 1, …}, "held": false, "at": …}, …}}

What ingest erases: the customer document (identities, tier, anti-phishing code), the
texts it keeps for agents' corrections and the training examples made from them. Then
it publishes a tombstone on support.customers, so compaction drops the customer there
too; a later message from the same address resolves to no one and starts a new customer.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from pymongo import ASCENDING, ReturnDocument

from services.ingest.parsers.common import normalise_email, normalise_phone
from services.ingest.store import MongoTrainingStore, identity_key
from shared.audit import AuditEntry, AuditLog, pseudonym
from shared.consume import Decoder
from shared.contracts.erasures import ErasureCompleted, ErasureRequested, LegalHoldChanged
from shared.erasure import ERASURE_INPUTS, erase_batch
from shared.events import OutboundEvent
from shared.mongo import Database, Document
from shared.topics import CUSTOMERS

log = logging.getLogger(__name__)

SERVICES = ("ingest", "router", "sla", "notify")  # every service that keeps customer data


def new_erasure_id() -> str:
    return f"ers_{uuid.uuid4().hex[:24]}"


def normalise_identity(kind: str, value: str) -> str:
    """The form ingest stores an identity in (lower-case email, E.164 phone)."""
    if kind == "email":
        return normalise_email(value) or value.strip().lower()
    if kind == "phone":
        return normalise_phone(value) or value.strip()
    return value.strip()


def erasure_view(doc: Document) -> dict[str, Any]:
    """`GET /v1/erasures/{id}`: the request and each service's state."""
    reported: dict[str, Any] = doc.get("services", {})
    services: dict[str, Any] = {}
    for svc in SERVICES:
        done = reported.get(svc)
        if doc.get("held"):
            services[svc] = {"state": "held"}
        elif done is None:
            services[svc] = {"state": "pending"}
        else:
            state = "held" if done.get("held") else "completed"
            services[svc] = {"state": state, "counts": done.get("counts", {}), "at": done["at"]}
    states = {s["state"] for s in services.values()}
    if doc.get("held"):
        overall = "held"
    elif "pending" in states:
        overall = "pending"
    else:
        overall = "held" if "held" in states else "completed"
    return {
        "erasure_id": doc["_id"],
        "customer_ref": doc["customer_ref"],
        "state": overall,
        "held": bool(doc.get("held")),
        "reason": doc.get("reason", ""),
        "requested_by": doc.get("requested_by"),
        "at": doc["at"],
        "services": services,
    }


class Tombstones(Protocol):
    async def send(self, customer_ids: Sequence[str]) -> None: ...


@dataclass
class KafkaTombstones:
    """A record with a null value per customer on support.customers.

    FastStream publishes `None` as an empty value, which compaction keeps; a tombstone
    must be null, so erasures (rare) use a short-lived aiokafka producer.
    """

    bootstrap: str

    async def send(self, customer_ids: Sequence[str]) -> None:
        if not customer_ids:
            return
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", client_id="omniroute-ingest-erasure"
        )
        await producer.start()
        try:
            for cid in customer_ids:
                await producer.send_and_wait(CUSTOMERS, value=None, key=cid.encode())
        finally:
            await producer.stop()


class ErasureStore:
    """The erasure log, holds on customers, and ingest's own erasure."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.erasures = db["erasures"]
        self.customers = db["customers"]
        self.examples = db["training_examples"]

    async def ensure_indexes(self) -> None:
        await self.erasures.create_index([("at", ASCENDING)])

    # -- customers and holds --------------------------------------------------------------

    async def resolve(self, kind: str, value: str) -> str | None:
        key = identity_key(kind, normalise_identity(kind, value))
        doc = await self.customers.find_one({"identity_keys": key}, {"_id": 1})
        return None if doc is None else str(doc["_id"])

    async def known(self, customer_id: str) -> bool:
        return await self.customers.find_one({"_id": customer_id}, {"_id": 1}) is not None

    async def held(self, customer_ids: Sequence[str] | Any = None) -> set[str]:
        query: dict[str, Any] = {"legal_hold": True}
        if customer_ids is not None:
            query["_id"] = {"$in": sorted(set(customer_ids))}
        return {str(d["_id"]) async for d in self.customers.find(query, {"_id": 1})}

    async def apply(self, changes: Sequence[LegalHoldChanged]) -> None:
        return None  # ingest owns holds: they are on its customer documents already

    async def set_hold(
        self, customer_id: str, hold: bool, now: datetime
    ) -> LegalHoldChanged | None:
        doc = await self.customers.find_one_and_update(
            {"_id": customer_id},
            {"$set": {"legal_hold": hold, "hold_changed_at": now}, "$inc": {"hold_version": 1}},
            projection={"hold_version": 1},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            return None
        return LegalHoldChanged(
            customer_id=customer_id, hold=hold, version=int(doc["hold_version"]), at=now
        )

    # -- the log --------------------------------------------------------------------------

    async def open(self, req: ErasureRequested, held: bool) -> Document:
        doc: Document = {
            "_id": req.erasure_id,
            "customer_ref": pseudonym(req.customer_id),
            "reason": req.reason,
            "requested_by": req.requested_by,
            "at": req.at,
            "held": held,
            "services": {},
        }
        await self.erasures.insert_one(doc)
        return doc

    async def get(self, erasure_id: str) -> Document | None:
        return await self.erasures.find_one({"_id": erasure_id})

    async def report(self, done: ErasureCompleted) -> bool:
        """Record a service's report; the first one counts (a repeat erases nothing more)."""
        field = f"services.{done.service}"
        result = await self.erasures.update_one(
            {"_id": done.erasure_id, field: {"$exists": False}},
            {"$set": {field: {"counts": done.counts, "held": done.held, "at": done.at}}},
        )
        return result.modified_count == 1

    # -- ingest's own records -------------------------------------------------------------

    async def erase(self, req: ErasureRequested, now: datetime) -> dict[str, int]:
        cid = req.customer_id
        counts: dict[str, int] = {}
        removed = await self.customers.delete_one({"_id": cid})
        counts["customers"] = removed.deleted_count
        texts = 0
        names = await self.db.list_collection_names(
            filter={"name": {"$regex": f"^{MongoTrainingStore.PREFIX}"}}
        )
        for name in names:
            texts += (await self.db[name].delete_many({"customer_id": cid})).deleted_count
        counts["classified_texts"] = texts
        examples = await self.examples.delete_many({"customer_id": cid})
        counts["training_examples"] = examples.deleted_count
        return counts


async def audit_report(audit: AuditLog, done: ErasureCompleted) -> None:
    """A service's completion in the append-only audit log: who did what, counts only."""
    await audit.record(
        AuditEntry(
            at=done.at,
            service="ingest",
            caller=f"service:{done.service}",
            client="kafka",
            route="erasure completed",
            outcome="held" if done.held else "ok",
            status=200,
            targets={
                "erasure_id": done.erasure_id,
                "counts": [f"{k}={v}" for k, v in sorted(done.counts.items())],
            },
        )
    )


@dataclass
class IngestErasure:
    """Ingest's consumer of support.erasures: its own erasure, and the erasure log."""

    store: ErasureStore
    tombstones: Tombstones
    audit: AuditLog
    decoder: Decoder = field(default_factory=lambda: Decoder("ingest", ERASURE_INPUTS))

    async def erase(self, req: ErasureRequested, now: datetime) -> dict[str, int]:
        counts = await self.store.erase(req, now)
        await self.tombstones.send([req.customer_id])
        return counts

    async def process(self, records: Sequence[Any], now: datetime) -> list[OutboundEvent]:
        batch = self.decoder.decode(records, now)
        for item in batch.events:
            done = item.event
            if isinstance(done, ErasureCompleted) and await self.store.report(done):
                await audit_report(self.audit, done)
        return await erase_batch(batch, now, service="ingest", erase=self.erase, holds=self.store)
