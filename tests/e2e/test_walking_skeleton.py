"""One chat message through all four services, on real Tansu and SecantusDB (each service
its own SecantusDB, holding only that service's collections)."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import uuid
from typing import Any

import httpx
import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary_event
from pymongo import MongoClient

from omniroute.samples import chat_message
from omniroute.system import DEV_SECRET, DEV_TOKEN, SERVICES, LocalSystem, owned_collections
from services.ingest.http import SIGNATURE_HEADER, sign
from shared.ids import conversation_id
from shared.mongo import KIT_COLLECTIONS
from shared.topics import ALL_TOPICS, COMPACTED, MESSAGES, TICKETS
from tests.support.kafka import read_all
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": f"Bearer {DEV_TOKEN}"}


def post(system: LocalSystem, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers[SIGNATURE_HEADER] = signature
    return httpx.post(
        f"{system.url('ingest')}/v1/inbound/chat/generic", content=body, headers=headers, timeout=10
    )


def records(system: LocalSystem, *topics: str) -> list[Any]:
    return asyncio.run(read_all(system.stack.kafka_bootstrap, topics))


def acknowledgement(db: Any, ticket_id: str) -> Any:
    """Notify's stored acknowledgement of the ticket, once there.

    Generous: the session's broker is shared, and notify's consumer group goes on from
    where the previous module's notify stopped, so it may first work off that backlog
    (seen: ~3,000 notifications, 25 s, on a loaded machine)."""
    return wait_until(
        lambda: db.notifications.find_one({"ticket_id": ticket_id, "cause": "acknowledgement"}),
        120,
        "ack",
    )


def test_chat_message_is_routed_timed_and_acknowledged(system: LocalSystem, db: Any) -> None:
    # An agent comes online through the router's API (events on support.agents).
    agent_id = f"agent-{uuid.uuid4().hex[:8]}"
    profile = {
        "name": "Alice",
        "languages": ["en", "zh"],
        "capacity": {"chat": 2},
        "auto_accept": True,
    }
    router = system.url("router")
    assert (
        httpx.put(f"{router}/v1/agents/{agent_id}", json=profile, headers=AUTH).status_code == 202
    )
    assert (
        httpx.post(
            f"{router}/v1/agents/{agent_id}/presence", json={"status": "online"}, headers=AUTH
        ).status_code
        == 202
    )
    wait_until(
        lambda: db.agents.find_one({"_id": agent_id, "presence": "online"}),
        20,
        "agent online in the router",
    )

    # A customer writes in on live chat; the webhook is signed.
    session = f"s-{uuid.uuid4().hex[:8]}"
    body = chat_message(
        session,
        "m-1",
        "Someone withdrew all my USDT without my permission!",
        visitor_id=f"v-{session}",
    )
    reply = post(system, body, sign(DEV_SECRET, body))
    assert reply.status_code == 202, reply.text
    [message_id] = reply.json()["message_ids"]

    # The router opens a ticket in MongoDB and assigns it to the online agent.
    ticket = wait_until(
        lambda: db.tickets.find_one({"message_ids": message_id, "state": "assigned"}), 30, "ticket"
    )
    assert ticket["agent_id"] == agent_id
    assert ticket["priority"] == "P1"
    assert ticket["decision"]["chosen"] == agent_id

    # `opened` then `assigned` on support.tickets, keyed by the ticket id.
    def ticket_events() -> list[Any]:
        found = [r for r in records(system, TICKETS) if r.key == ticket["_id"].encode()]
        return found if len(found) >= 2 else []

    events = wait_until(ticket_events, 20, "ticket events")
    names = [json.loads(r.value)["event"] for r in sorted(events, key=lambda r: r.offset)]
    assert names[:2] == ["opened", "assigned"]
    assert json.loads(events[0].value)["message_id"] == message_id

    # SLA starts a first-response timer; notify stores an acknowledgement.
    timer = wait_until(
        lambda: db.sla_timers.find_one({"ticket_id": ticket["_id"], "metric": "first_response"}),
        20,
        "timer",
    )
    assert timer["state"] == "running"
    ack = acknowledgement(db, ticket["_id"])
    assert ack["template"] == "acknowledgement_stolen_funds"
    assert "never ask for your password" in ack["text"]


def test_a_possible_theft_is_acknowledged_with_the_freeze_advice(
    system: LocalSystem, db: Any
) -> None:
    # Ingest's model takes this for a withdrawal question, with theft likely enough to
    # raise it to P1: the ticket keeps its category, and the customer still hears what to
    # do now if it is theft.
    session = f"s-{uuid.uuid4().hex[:8]}"
    text = "My withdrawal of 0.5 BTC went to an address I don't recognise, is it still pending?"
    body = chat_message(session, "m-1", text, visitor_id=f"v-{session}")
    reply = post(system, body, sign(DEV_SECRET, body))
    assert reply.status_code == 202, reply.text
    [message_id] = reply.json()["message_ids"]

    ticket = wait_until(lambda: db.tickets.find_one({"message_ids": message_id}), 30, "ticket")
    assert (ticket["category"], ticket["priority"]) == ("withdrawal", "P1")
    assert ticket["possible_urgent"] == "stolen_funds"
    ack = acknowledgement(db, ticket["_id"])
    assert ack["template"] == "acknowledgement_possible_theft"
    assert "freeze your account yourself now" in ack["text"]


def test_bad_signature_is_refused_and_nothing_published(system: LocalSystem, db: Any) -> None:
    session = f"s-{uuid.uuid4().hex[:8]}"
    body = chat_message(session, "m-1", "hello", visitor_id=f"v-{session}")
    assert post(system, body, None).status_code == 401
    assert post(system, body, "sha256=" + "0" * 64).status_code == 401
    assert post(system, body, sign("wrong-secret", body)).status_code == 401
    # A later, valid message of another session gets through: so the first one would have too.
    other = f"s-{uuid.uuid4().hex[:8]}"
    good = chat_message(other, "m-1", "hello", visitor_id=f"v-{other}")
    [good_id] = post(system, good, sign(DEV_SECRET, good)).json()["message_ids"]
    wait_until(lambda: db.tickets.find_one({"message_ids": good_id}), 30, "good ticket")
    refused = conversation_id("chat", "generic", session)
    conversations = {json.loads(r.value)["conversation_id"] for r in records(system, MESSAGES)}
    assert conversation_id("chat", "generic", other) in conversations
    assert refused not in conversations


def test_webhook_retry_yields_one_message(system: LocalSystem, db: Any) -> None:
    session = f"s-{uuid.uuid4().hex[:8]}"
    body = chat_message(session, "m-1", "my deposit has not arrived", visitor_id=f"v-{session}")
    first = post(system, body, sign(DEV_SECRET, body)).json()["message_ids"]
    second = post(system, body, sign(DEV_SECRET, body)).json()["message_ids"]
    assert first == second
    wait_until(lambda: db.tickets.find_one({"message_ids": first[0]}), 30, "ticket")
    assert db.tickets.count_documents({"message_ids": first[0]}) == 1


def test_every_record_on_every_topic_is_a_cloudevent(system: LocalSystem) -> None:
    # Written last in the module: by now every service has published something.
    produced = [t for t in ALL_TOPICS if not t.startswith("support.inbound.")]
    seen_types: set[str] = set()
    for record in records(system, *produced):
        if record.topic in COMPACTED and record.value is None:
            assert record.key  # a tombstone (an erased customer): deletes that key's records
            continue
        ce = from_binary_event(
            KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value)
        )
        assert ce.get_specversion() == "1.0"
        seen_types.add(ce.get_type())
    assert {
        "omniroute.message.received.v1",
        "omniroute.ticket.opened.v1",
        "omniroute.ticket.assigned.v1",
        "omniroute.sla.started.v1",
        "omniroute.notification.recorded.v1",
        "omniroute.agent.presence_changed.v1",
        "omniroute.customer.updated.v1",  # the new visitors, announced by ingest
    } <= seen_types


ALLOWED_EXTRA: dict[str, set[str]] = {}  # collections beyond a service's own: none


def test_each_service_keeps_only_its_own_collections_in_its_own_database(
    system: LocalSystem,
) -> None:
    # After the module's real traffic: on each service's own server, the system's only
    # database is that service's, and it holds only what the service's stores declare
    # (and the shared kit's audit records and leases).
    owned = owned_collections()
    touched: dict[str, dict[str, set[str]]] = {}
    for service in SERVICES:
        client: MongoClient[dict[str, Any]] = MongoClient(system.mongo_uri(service))
        try:
            ours = [d for d in client.list_database_names() if d.startswith(system.mongo_db)]
            touched[service] = {d: set(client[d].list_collection_names()) for d in ours}
        finally:
            client.close()
    assert {s: set(dbs) for s, dbs in touched.items()} == {
        s: {system.database(s)} for s in SERVICES
    }
    for service in SERVICES:
        found = touched[service][system.database(service)]
        allowed = [*owned[service], *KIT_COLLECTIONS, *ALLOWED_EXTRA.get(service, ())]
        strangers = {c for c in found if not any(fnmatch.fnmatchcase(c, a) for a in allowed)}
        assert not strangers, f"{service}'s database holds {strangers}"
    # Each kept what it works on: the traffic above reached every service's store.
    assert {"customers", "classified_texts_*"} <= {
        "classified_texts_*" if c.startswith("classified_texts_") else c
        for c in touched["ingest"][system.database("ingest")]
    }
    assert {"tickets", "agents"} <= touched["router"][system.database("router")]
    assert "sla_timers" in touched["sla"][system.database("sla")]
    assert "notifications" in touched["notify"][system.database("notify")]
