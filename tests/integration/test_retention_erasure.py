"""Retention sweeps and each service's erasure on the real store (SecantusDB)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from services.ingest.erasure import ErasureStore, IngestErasure
from services.ingest.retention import ingest_sweeps
from services.notify.erasure import NotifyErasure
from services.router.engine import RouterState
from services.router.erasure import ERASED, RouterErasure
from services.router.priority import load_policy as load_routing
from services.sla.deadlines import SlaState
from services.sla.deadlines import load_policy as load_sla
from services.sla.erasure import SlaErasure
from shared.audit import MemoryAuditLog, pseudonym
from shared.contracts.erasures import ErasureCompleted, ErasureRequested, LegalHoldChanged
from shared.erasure import completed_event, hold_event, requested_event
from shared.holds import MongoHolds
from shared.retention import RetentionPolicy, Sweeper
from shared.settings import REPO_POLICY_DIR
from tests.support.fakes import record_of

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
OLD = NOW - timedelta(days=3)
REQ = ErasureRequested(
    erasure_id="ers_1",
    customer_id="cus_a",
    reason="customer request",
    requested_by="key:dpo",
    at=NOW,
)


def short_policy(batch_size: int = 2) -> RetentionPolicy:
    """Every kind kept for a day: records from three days ago are expired."""
    kinds = RetentionPolicy.model_fields["keep"].annotation.model_fields  # type: ignore[union-attr]
    return RetentionPolicy.model_validate(
        {"sweep_interval_s": 60, "batch_size": batch_size, "keep": dict.fromkeys(kinds, "P1D")}
    )


def removed(registries: dict[str, CollectorRegistry], service: str, collection: str) -> float:
    value = registries[service].get_sample_value(
        "omniroute_retention_removed_total", {"service": service, "collection": collection}
    )
    return value or 0.0


async def test_a_short_policy_removes_expired_records_keeps_held_and_fresh_ones(db: Any) -> None:
    policy = short_policy(batch_size=2)
    holds = MongoHolds(db)
    await holds.apply([LegalHoldChanged(customer_id="cus_held", hold=True, version=1, at=NOW)])
    # notify: five expired notifications (more than a batch), one held, one fresh, one pending
    docs = [
        {"_id": f"n{i}", "customer_id": "cus_a", "status": "sent", "created_at": OLD}
        for i in range(5)
    ]
    docs += [
        {"_id": "held", "customer_id": "cus_held", "status": "sent", "created_at": OLD},
        {"_id": "fresh", "customer_id": "cus_a", "status": "sent", "created_at": NOW},
        {"_id": "pending", "customer_id": "cus_a", "status": "pending", "created_at": OLD},
    ]
    await db["notifications"].insert_many(docs)
    # router: resolved tickets, an open one; sla: finished and running timers
    await db["tickets"].insert_many(
        [
            {"_id": "t_old", "customer_id": "cus_a", "state": "resolved", "resolved_at": OLD},
            {"_id": "t_held", "customer_id": "cus_held", "state": "resolved", "resolved_at": OLD},
            {"_id": "t_open", "customer_id": "cus_a", "state": "queued", "resolved_at": None},
        ]
    )
    await db["sla_timers"].insert_many(
        [
            {"_id": "m_old", "customer_id": "cus_a", "state": "met", "finished_at": OLD},
            {"_id": "m_held", "customer_id": "cus_held", "state": "met", "finished_at": OLD},
            {"_id": "m_run", "customer_id": "cus_a", "state": "running"},
        ]
    )
    # ingest: training examples (held customers are marked on ingest's customer documents)
    await db["customers"].insert_one({"_id": "cus_held", "legal_hold": True})
    await db["training_examples"].insert_many(
        [
            {"_id": "e_old", "customer_id": "cus_a", "at": OLD},
            {"_id": "e_held", "customer_id": "cus_held", "at": OLD},
        ]
    )
    sweeps = {
        "notify": NotifyErasure(db).sweeps(policy),
        "router": RouterErasure(db).sweeps(policy),
        "sla": SlaErasure(db).sweeps(policy),
        "ingest": ingest_sweeps(db, policy, ErasureStore(db).held),
    }
    # One registry per service, as each service process has.
    registries = {svc: CollectorRegistry() for svc in sweeps}
    sweepers = [Sweeper(svc, policy, registries[svc], s) for svc, s in sweeps.items()]

    counts = [await s.sweep() for s in sweepers]

    assert counts[0]["notifications"] == 5
    assert sorted([d["_id"] async for d in db["notifications"].find({})]) == [
        "fresh",
        "held",
        "pending",
    ]
    assert sorted([d["_id"] async for d in db["tickets"].find({})]) == ["t_held", "t_open"]
    assert sorted([d["_id"] async for d in db["sla_timers"].find({})]) == ["m_held", "m_run"]
    assert [d["_id"] async for d in db["training_examples"].find({})] == ["e_held"]
    assert removed(registries, "notify", "notifications") == 5
    assert removed(registries, "router", "tickets") == 1
    assert removed(registries, "sla", "sla_timers") == 1
    assert removed(registries, "ingest", "training_examples") == 1
    # A second sweep finds nothing more and counts nothing more.
    assert not any([any((await s.sweep()).values()) for s in sweepers])
    assert removed(registries, "notify", "notifications") == 5


async def test_a_released_hold_lets_retention_remove_the_records(db: Any) -> None:
    policy = short_policy()
    holds = MongoHolds(db)
    await holds.apply([LegalHoldChanged(customer_id="cus_h", hold=True, version=1, at=NOW)])
    await db["notifications"].insert_one(
        {"_id": "n", "customer_id": "cus_h", "status": "sent", "created_at": OLD}
    )
    sweeper = Sweeper("notify", policy, CollectorRegistry(), NotifyErasure(db).sweeps(policy))
    assert (await sweeper.sweep())["notifications"] == 0
    # A redelivered older change never rolls the release back.
    await holds.apply([LegalHoldChanged(customer_id="cus_h", hold=False, version=2, at=NOW)])
    await holds.apply([LegalHoldChanged(customer_id="cus_h", hold=True, version=1, at=NOW)])
    assert (await sweeper.sweep())["notifications"] == 1


@dataclass
class SentTombstones:
    sent: list[str] = field(default_factory=list)

    async def send(self, customer_ids: Any) -> None:
        self.sent += list(customer_ids)


async def test_ingest_erases_its_customer_texts_and_examples_and_keeps_the_log(db: Any) -> None:
    store = ErasureStore(db)
    await db["customers"].insert_many(
        [
            {
                "_id": "cus_a",
                "identities": [{"kind": "email", "value": "a@example.com"}],
                "identity_keys": ["email:a@example.com"],
            },
            {"_id": "cus_b", "identity_keys": ["email:b@example.com"]},
        ]
    )
    day = f"classified_texts_{NOW:%Y%m%d}"
    await db[day].insert_many(
        [
            {"_id": "m1", "customer_id": "cus_a", "text": "my funds are gone"},
            {"_id": "m2", "customer_id": "cus_b", "text": "deposit missing"},
        ]
    )
    await db["training_examples"].insert_one({"_id": "t1", "customer_id": "cus_a", "text": "x"})
    # The API resolves an identity as the customer wrote it.
    assert await store.resolve("email", " A@Example.com ") == "cus_a"
    audit = MemoryAuditLog()
    tombstones = SentTombstones()
    eraser = IngestErasure(store, tombstones, audit)
    await store.open(REQ, held=False)

    out = await eraser.process([record_of(requested_event(REQ))], NOW)

    (done,) = [ErasureCompleted.model_validate_json(e.value) for e in out]
    assert done.counts == {"customers": 1, "classified_texts": 1, "training_examples": 1}
    assert tombstones.sent == ["cus_a"]
    assert await store.resolve("email", "a@example.com") is None
    assert [d["_id"] async for d in db[day].find({})] == ["m2"]
    # Its own report (and later the others') comes back on the topic into the log.
    reports = [completed_event(done)]
    reports.append(completed_event(done.model_copy(update={"service": "router"})))
    await eraser.process([record_of(e) for e in reports], NOW)
    await eraser.process([record_of(reports[0])], NOW)  # redelivered: recorded once
    log = await store.get("ers_1")
    assert log is not None and set(log["services"]) == {"ingest", "router"}
    assert log["customer_ref"] == pseudonym("cus_a")
    assert len(audit.entries) == 2
    # The log and the audit name the customer only pseudonymously.
    assert "cus_a" not in json.dumps([log, audit.entries], default=str)


async def test_ingest_does_not_erase_a_held_customer(db: Any) -> None:
    store = ErasureStore(db)
    await db["customers"].insert_one({"_id": "cus_a", "identity_keys": ["email:a@example.com"]})
    change = await store.set_hold("cus_a", True, NOW)
    assert change is not None and change.version == 1
    assert await store.set_hold("cus_missing", True, NOW) is None
    eraser = IngestErasure(store, SentTombstones(), MemoryAuditLog())

    out = await eraser.process([record_of(requested_event(REQ))], NOW)

    (done,) = [ErasureCompleted.model_validate_json(e.value) for e in out]
    assert done.held and done.counts == {}
    assert await store.known("cus_a")


async def test_notify_erases_notifications_and_routes_and_keeps_ticket_shells(db: Any) -> None:
    await db["notifications"].insert_many(
        [
            {"_id": "n1", "customer_id": "cus_a", "conversation_id": "c1", "text": "Dear A"},
            {"_id": "n2", "customer_id": "cus_b", "conversation_id": "c2", "text": "Dear B"},
        ]
    )
    await db["notify_tickets"].insert_one(
        {"_id": "t1", "customer_id": "cus_a", "conversation_id": "c1", "category": "deposit"}
    )
    await db["notify_conversations"].insert_many(
        [
            {"_id": "c1", "customer_id": "cus_a", "reply_to": "a@example.com"},
            {"_id": "c2", "customer_id": "cus_b", "reply_to": "b@example.com"},
        ]
    )
    await db["notify_customers"].insert_one({"_id": "cus_a", "anti_phishing_code": "A1"})
    eraser = NotifyErasure(db)

    out = await eraser.process([record_of(requested_event(REQ))], NOW)

    (done,) = [ErasureCompleted.model_validate_json(e.value) for e in out]
    assert done.service == "notify"
    assert done.counts == {
        "notifications": 1,
        "notify_conversations": 1,
        "notify_tickets": 1,
        "notify_customers": 1,
    }
    assert [d["_id"] async for d in db["notifications"].find({})] == ["n2"]
    assert [d["_id"] async for d in db["notify_conversations"].find({})] == ["c2"]
    shell = await db["notify_tickets"].find_one({"_id": "t1"})
    assert shell["customer_id"] == "erased" and shell["conversation_id"] is None
    assert shell["category"] == "deposit"
    # A held customer is reported held and keeps everything.
    await eraser.process([record_of(hold_event(_hold("cus_b")))], NOW)
    other = REQ.model_copy(update={"erasure_id": "ers_2", "customer_id": "cus_b"})
    (held,) = await eraser.process([record_of(requested_event(other))], NOW)
    assert ErasureCompleted.model_validate_json(held.value).held
    assert await db["notifications"].count_documents({}) == 1


async def test_the_engines_anonymise_records_no_longer_in_memory(db: Any) -> None:
    # Tickets and timers of cases closed long ago live only in the store.
    await db["tickets"].insert_one(
        {"_id": "t_old", "customer_id": "cus_a", "conversation_ids": ["c1"], "category": "kyc"}
    )
    await db["sla_timers"].insert_one({"_id": "m_old", "customer_id": "cus_a", "state": "met"})
    router = RouterErasure(db)
    router.note(REQ)
    state = RouterState(load_routing(REPO_POLICY_DIR / "routing.yaml"))
    _, done = await router.finish(state, NOW)
    assert json.loads(done[0].value)["counts"] == {"tickets": 1}
    ticket = await db["tickets"].find_one({"_id": "t_old"})
    assert (ticket["customer_id"], ticket["conversation_ids"], ticket["category"]) == (
        ERASED,
        [],
        "kyc",
    )
    sla = SlaErasure(db)
    sla.note(REQ)

    @dataclass
    class Step:
        added: list[str] = field(default_factory=list)

        def add(self, ticket_id: str, timers: Any, events: Any) -> None:
            self.added.append(ticket_id)

    done = await sla.finish(SlaState(load_sla(REPO_POLICY_DIR / "sla.yaml")), Step(), NOW)
    assert json.loads(done[0].value)["counts"] == {"sla_timers": 1}
    assert (await db["sla_timers"].find_one({"_id": "m_old"}))["customer_id"] == ERASED


def _hold(customer_id: str) -> LegalHoldChanged:
    return LegalHoldChanged(customer_id=customer_id, hold=True, version=1, at=NOW)
