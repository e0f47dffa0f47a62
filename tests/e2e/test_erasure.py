"""Erasure end to end: a customer writes by email and chat, gets tickets, notifications and
SLA timers; after `POST /v1/erasures` no database of any service and no service log holds
their identities or text, tickets and timers remain as anonymous shells, `GET
/v1/erasures/{id}` shows every service completed, and the same address writes in again as
a new customer. A customer under legal hold is not erased and the erasure says so.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from omniroute.samples import chat_message
from omniroute.system import DEV_TOKEN, LocalSystem
from shared.ids import customer_id
from tests.support.inbound import post_inbound
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": f"Bearer {DEV_TOKEN}"}
SERVICES = ("ingest", "router", "sla", "notify")
# The server's own databases: `local` holds the replication log (oplog.rs), a capped
# collection that keeps every write until it rolls over (README "Retention and erasure").
SERVER_DATABASES = frozenset({"local", "admin", "config"})


def email(address: str, name: str, subject: str, text: str) -> bytes:
    mail = EmailMessage()
    mail["From"] = f"{name} <{address}>"
    mail["To"] = "support@exchange.test"
    mail["Subject"] = subject
    mail["Message-ID"] = f"<{uuid.uuid4().hex}@mail.example.org>"
    mail["Date"] = format_datetime(datetime.now(UTC))
    mail.set_content(text, charset="utf-8")
    return mail.as_bytes(policy=policy.SMTP)


def store_uris(system: LocalSystem) -> set[str]:
    """Every store server the system's services use (one, or one per service)."""
    uris = {system.stack.mongo_uri(store) for store in system.stack.stores}
    for svc in system.services.values():
        uri = system.env_for(svc).get("OMNIROUTE_MONGO_URI")
        if uri:
            uris.add(uri)
    return uris


def findings(system: LocalSystem, needles: Iterable[str]) -> list[str]:
    """Where any needle appears: every collection of every service database (every database
    but the server's own) on every store server."""
    wanted = [n.lower() for n in needles]
    found: list[str] = []
    for uri in sorted(store_uris(system)):
        client: MongoClient[dict[str, Any]] = MongoClient(uri, tz_aware=True)
        try:
            for db_name in sorted(set(client.list_database_names()) - SERVER_DATABASES):
                db = client[db_name]
                for coll in db.list_collection_names():
                    for doc in db[coll].find({}):
                        text = json.dumps(doc, default=str, ensure_ascii=False).lower()
                        found += [f"{db_name}.{coll}: {n}" for n in wanted if n in text]
        finally:
            client.close()
    return found


def log_findings(system: LocalSystem, needles: Iterable[str]) -> list[str]:
    found: list[str] = []
    for path in sorted(system.log_dir.glob("*.log")):
        text = path.read_text("utf-8", errors="replace").lower()
        found += [f"{path.name}: {n}" for n in needles if n.lower() in text]
    return found


def erasure(system: LocalSystem, erasure_id: str) -> dict[str, Any]:
    reply = httpx.get(f"{system.url('ingest')}/v1/erasures/{erasure_id}", headers=AUTH, timeout=10)
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def test_an_erased_customer_leaves_only_anonymous_shells(system: LocalSystem, db: Any) -> None:
    run = uuid.uuid4().hex[:8]
    router = system.url("router")
    agent = f"agent-{run}"
    profile = {"name": "Ana", "languages": ["en"], "capacity": {"chat": 2, "email": 4}}
    assert httpx.put(f"{router}/v1/agents/{agent}", json=profile, headers=AUTH).status_code == 202
    presence = {"status": "online"}
    reply = httpx.post(f"{router}/v1/agents/{agent}/presence", json=presence, headers=AUTH)
    assert reply.status_code == 202
    wait_until(lambda: db.agents.find_one({"_id": agent, "presence": "online"}), 20, "agent")

    # The customer writes by email, then by chat with the same address.
    address = f"mei.{run}@example.org"
    name = f"Mei Lin{run}"
    visitor = f"visitor-{run}"
    email_text = f"My withdrawal of 0.5 BTC marker{run}e never arrived, please check."
    chat_text = f"Still waiting on my withdrawal marker{run}c, nobody answered my email."
    [email_id] = post_inbound(
        system, "email", "smtp", email(address, name, f"Withdrawal {run} missing", email_text)
    )
    [chat_id] = post_inbound(
        system,
        "chat",
        "generic",
        chat_message(f"s-{run}", "m1", chat_text, visitor_id=visitor, email=address),
    )
    cid = customer_id("email", address)
    # Tickets (router), timers (sla) and notifications (notify) for both messages.
    tickets = wait_until(
        lambda: (
            found
            if len(found := list(db.tickets.find({"message_ids": {"$in": [email_id, chat_id]}})))
            == 2
            else None
        ),
        30,
        "two tickets",
    )
    ticket_ids = sorted(t["_id"] for t in tickets)
    assert {t["customer_id"] for t in tickets} == {cid}
    wait_until(
        lambda: (
            db.sla_timers.count_documents({"ticket_id": {"$in": ticket_ids}}) >= 2
            or db.sla_journal.count_documents({}) > 0
        ),
        30,
        "SLA timers",
    )
    wait_until(
        lambda: db.notifications.count_documents({"ticket_id": {"$in": ticket_ids}}) >= 2,
        30,
        "notifications",
    )
    needles = [address, visitor, name, f"marker{run}e", f"marker{run}c", f"Withdrawal {run}"]
    assert findings(system, needles)  # the probe sees them before the erasure

    # The data protection officer asks for the erasure by the customer's address.
    asked_at = datetime.now(UTC)
    reply = httpx.post(
        f"{system.url('ingest')}/v1/erasures",
        json={"identity": {"kind": "email", "value": address.upper()}, "reason": "GDPR Art. 17"},
        headers=AUTH,
        timeout=10,
    )
    assert reply.status_code == 202, reply.text
    erasure_id = reply.json()["erasure_id"]

    # Every service reports its part.
    done = wait_until(
        lambda: e if (e := erasure(system, erasure_id))["state"] == "completed" else None,
        60,
        "every service completed",
    )
    assert {s: v["state"] for s, v in done["services"].items()} == dict.fromkeys(
        SERVICES, "completed"
    )
    assert done["services"]["router"]["counts"] == {"tickets": 2}
    # (The customer document itself: the scan below. Until each service has its own
    # database, ingest's and notify's `customers` are one collection: either may go first.)
    assert done["services"]["ingest"]["counts"]["classified_texts"] == 2
    assert done["services"]["sla"]["counts"]["sla_timers"] >= 2
    assert done["services"]["notify"]["counts"]["notifications"] >= 2
    assert cid not in json.dumps(done)

    # No database of any service holds the identities, the name, the texts or the
    # customer id any more (journals fold within moments: wait for them, with a deadline).
    left: list[str] = []

    def clean() -> bool:
        left[:] = findings(system, [*needles, cid])
        return not left

    try:
        wait_until(clean, 30, "no trace of the customer in any database")
    except AssertionError:
        raise AssertionError(f"still stored: {left}") from None
    assert log_findings(system, needles) == []

    # The tickets remain as anonymous shells: category, priority, times, agent.
    for t in db.tickets.find({"_id": {"$in": ticket_ids}}):
        assert t["customer_id"] == "erased" and t["conversation_ids"] == []
        assert t["category"] and t["priority"] and t["opened_at"]
    assert {t["agent_id"] for t in db.tickets.find({"_id": {"$in": ticket_ids}})} & {agent}
    assert db.sla_timers.count_documents({"ticket_id": {"$in": ticket_ids}}) >= 2
    assert {t["customer_id"] for t in db.sla_timers.find({"ticket_id": {"$in": ticket_ids}})} == {
        "erased"
    }

    # The same address writes again: a new customer, linked to nothing of before.
    [again] = post_inbound(
        system, "email", "smtp", email(address, "M", "Hello again", "A new question.")
    )
    fresh = wait_until(lambda: db.tickets.find_one({"message_ids": again}), 30, "new ticket")
    assert fresh["_id"] not in ticket_ids and fresh["customer_id"] == cid
    customer = db.customers.find_one({"identity_keys": f"email:{address}"})
    assert customer["created_at"] >= asked_at.replace(microsecond=0)
    assert [i["kind"] for i in customer["identities"]] == ["email"]  # not the chat visitor


def test_a_customer_under_legal_hold_is_not_erased(system: LocalSystem, db: Any) -> None:
    run = uuid.uuid4().hex[:8]
    address = f"held.{run}@example.org"
    [message_id] = post_inbound(
        system, "email", "smtp", email(address, "H", "Dispute", f"Dispute marker{run}")
    )
    wait_until(lambda: db.tickets.find_one({"message_ids": message_id}), 30, "ticket")
    cid = customer_id("email", address)
    ingest = system.url("ingest")
    hold = {"hold": True, "reason": "regulator inquiry"}
    reply = httpx.put(f"{ingest}/v1/customers/{cid}/hold", json=hold, headers=AUTH, timeout=10)
    assert reply.status_code == 200, reply.text

    reply = httpx.post(
        f"{ingest}/v1/erasures",
        json={"customer_id": cid, "reason": "customer request"},
        headers=AUTH,
        timeout=10,
    )
    assert reply.status_code == 202 and reply.json()["state"] == "held"
    view = erasure(system, reply.json()["erasure_id"])
    assert view["state"] == "held" and view["held"] is True
    # Nothing erased: the customer and their ticket are as they were.
    assert db.customers.find_one({"_id": cid})["legal_hold"] is True
    assert db.tickets.find_one({"message_ids": message_id})["customer_id"] == cid
    # The hold and the erasure are in the audit log, by route and outcome, no address.
    routes = {e["route"] for e in db.ingest.api_audit.find({"service": "ingest"})}
    assert {"PUT /v1/customers/{customer_id}/hold", "POST /v1/erasures"} <= routes
    assert address not in json.dumps(list(db.ingest.api_audit.find({}, {"_id": 0})), default=str)
    # Unknown customers and malformed requests get clear errors.
    missing = {"identity": {"kind": "email", "value": "nobody@example.org"}, "reason": "x"}
    assert httpx.post(f"{ingest}/v1/erasures", json=missing, headers=AUTH).status_code == 404
    both = {"customer_id": cid, "identity": missing["identity"], "reason": "x"}
    assert httpx.post(f"{ingest}/v1/erasures", json=both, headers=AUTH).status_code == 422
    assert httpx.post(f"{ingest}/v1/erasures", json={"customer_id": cid}).status_code == 401
