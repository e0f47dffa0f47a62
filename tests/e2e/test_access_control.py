"""Access control on the real pipeline: four processes, Tansu and SecantusDB.

Named keys and desk JWTs from the services' settings; a customer's chat message becomes
alice's ticket; mallory cannot act on it through the API (403, 409) nor past it (straight
to `support.agents`: rejected, visible at GET /v1/actions/{event_id}); every write leaves
an audit record with ids only; a key over its rate gets 429 with Retry-After.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from omniroute.samples import chat_message
from omniroute.system import DEV_SECRET, LocalSystem
from services.ingest.http import SIGNATURE_HEADER, sign
from shared.contracts.agents import AGENT_ACTION_TAKEN, AgentActionTaken
from shared.contracts.tickets import TicketEvent
from shared.embedded import EmbeddedStack
from shared.events import OutboundEvent, make_event
from shared.topics import AGENTS, TICKETS
from tests.support.access import Issuer, Keys
from tests.support.kafka import read_all
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

ISSUER = Issuer()
KEYS = Keys()
OPS = KEYS.add("e2e-ops", ["agents:admin", "agents:read", "incidents:write"], client="ops")
DESK = KEYS.add("e2e-desk", ["tickets:read", "tickets:act", "tickets:act-as"], client="desk")
SLOW = KEYS.add("e2e-poller", ["tickets:read"], client="poller", rate_per_s=0.2, burst=2)
ALICE = ISSUER.auth("alice", ["tickets:act", "tickets:read"])
MALLORY = ISSUER.auth("mallory", ["tickets:act"])


@pytest.fixture(scope="module")
def system(stack: EmbeddedStack) -> Iterator[LocalSystem]:
    running = LocalSystem(
        stack,
        log_dir=stack.root / "logs" / "access_control",
        mongo_db="e2e_access_control",
        env_overrides={"OMNIROUTE_API_KEYS": KEYS.env(), **ISSUER.env()},
    )
    try:
        running.start()
        running.wait_ready(timeout_s=90)
        yield running
    finally:
        running.stop()


async def publish(bootstrap: str, event: OutboundEvent) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            event.topic,
            event.value,
            key=event.key.encode() if event.key else None,
            headers=[(k, v.encode()) for k, v in event.headers.items()],
        )
    finally:
        await producer.stop()


def ticket_events(system: LocalSystem, ticket_id: str) -> list[TicketEvent]:
    records = asyncio.run(read_all(system.stack.kafka_bootstrap, [TICKETS]))
    events = [TicketEvent.model_validate_json(r.value) for r in records]
    return sorted((e for e in events if e.ticket_id == ticket_id), key=lambda e: e.sequence)


def test_every_caller_only_where_it_belongs(system: LocalSystem, db: Any) -> None:
    router = system.url("router")
    client = httpx.Client(base_url=router, timeout=10)

    # Reads need a credential too, with the right scope.
    assert client.get("/v1/tickets?state=queued").status_code == 401
    assert client.get("/v1/tickets?state=queued", headers=OPS).status_code == 403
    assert client.get("/v1/tickets?state=queued", headers=DESK).status_code == 200

    # Ops creates alice's profile; alice goes online with her own desk token.
    profile = {"name": "Alice", "languages": ["en"], "capacity": {"chat": 1}, "auto_accept": True}
    assert client.put("/v1/agents/alice", json=profile, headers=OPS).status_code == 202
    assert client.put("/v1/agents/alice", json=profile, headers=DESK).status_code == 403
    online = client.post("/v1/agents/alice/presence", json={"status": "online"}, headers=ALICE)
    assert online.status_code == 202, online.text
    wait_until(lambda: db.agents.find_one({"_id": "alice", "presence": "online"}), 20, "alice")

    # A customer writes in (a signed webhook); the ticket becomes alice's.
    session = f"s-{uuid.uuid4().hex[:8]}"
    body = chat_message(session, "m-1", "My deposit has not arrived", visitor_id=f"v-{session}")
    hook = httpx.post(
        f"{system.url('ingest')}/v1/inbound/chat/generic",
        content=body,
        headers={SIGNATURE_HEADER: sign(DEV_SECRET, body), "content-type": "application/json"},
    )
    assert hook.status_code == 202, hook.text
    [message_id] = hook.json()["message_ids"]
    ticket = wait_until(
        lambda: db.tickets.find_one({"message_ids": message_id, "state": "assigned"}), 30, "ticket"
    )
    tid = ticket["_id"]
    assert ticket["agent_id"] == "alice"

    # Alice's token cannot act as mallory; mallory's own cannot touch alice's ticket.
    url = f"/v1/tickets/{tid}/resolve"
    as_mallory = client.post(url, json={"agent_id": "mallory"}, headers=ALICE)
    assert as_mallory.status_code == 403
    assert "cannot act as mallory" in as_mallory.json()["error"]
    own = client.post(url, json={"agent_id": "mallory"}, headers=MALLORY)
    assert own.status_code == 409
    # A desk backend may name any agent, but not make mallory the assignee.
    desk = client.post(url, json={"agent_id": "mallory"}, headers=DESK)
    assert (desk.status_code, desk.json()["error"]) == (
        409,
        "not the assignee: the ticket is with another agent",
    )

    # A desk tool publishing straight to support.agents: the engine rejects it, visibly.
    foreign = make_event(
        AgentActionTaken(agent_id="mallory", ticket_id=tid, action="resolve", at=datetime.now(UTC)),
        topic=AGENTS,
        event_type=AGENT_ACTION_TAKEN,
        event_id=f"evt-{uuid.uuid4().hex}",
        source="e2e/desk-tool",
        key="mallory",
        time=datetime.now(UTC),
    )
    asyncio.run(publish(system.stack.kafka_bootstrap, foreign))
    status = wait_until(
        lambda: (
            (r := client.get(f"/v1/actions/{foreign.id}", headers=DESK)).status_code == 200
            and r.json()
        ),
        20,
        "the engine's verdict",
    )
    assert status["status"] == "rejected"
    assert status["reason"] == "not the assignee: the ticket is with another agent"
    assert db.tickets.find_one({"_id": tid})["state"] == "assigned"

    # Alice resolves her own ticket: pending, then accepted.
    done = client.post(url, json={"agent_id": "alice"}, headers=ALICE)
    assert done.status_code == 202, done.text
    assert done.json()["status"] == "pending"
    verdict = wait_until(
        lambda: (
            (r := client.get(done.json()["status_url"], headers=ALICE).json())["status"]
            != "pending"
            and r
        ),
        20,
        "alice's resolve applied",
    )
    assert verdict["status"] == "accepted"
    wait_until(lambda: db.tickets.find_one({"_id": tid, "state": "resolved"}), 20, "resolved")
    again = client.post(url, json={"agent_id": "alice"}, headers=ALICE)
    assert (again.status_code, again.json()["error"]) == (409, "ticket already resolved")

    # The ticket's log tells the rejection between the assignment and the resolve; the
    # SLA and notify services carried on (the resolve met the resolution timer).
    names = [e.event for e in ticket_events(system, tid)]
    assert names[-2:] == ["action_rejected", "resolved"]
    wait_until(
        lambda: db.sla_timers.find_one({"ticket_id": tid, "metric": "resolution", "state": "met"}),
        20,
        "resolution timer met",
    )

    # Every write left one audit record: who, which route, which ids, the outcome.
    # (each service keeps its audit records in its own database)
    records = [
        r for svc in ("ingest", "router", "notify") for r in db[svc].api_audit.find({}, {"_id": 0})
    ]
    seen = {(r["service"], r["caller"], r["route"], r["status"]) for r in records}
    action = "POST /v1/tickets/{ticket_id}/{action}"
    assert {
        ("router", "key:e2e-ops", "PUT /v1/agents/{agent_id}", 202),
        ("router", "key:e2e-desk", "PUT /v1/agents/{agent_id}", 403),
        ("router", "jwt:alice", "POST /v1/agents/{agent_id}/presence", 202),
        ("ingest", "webhook:generic", "POST /v1/inbound/{channel}/{provider}", 202),
        ("router", "jwt:alice", action, 403),
        ("router", "jwt:mallory", action, 409),
        ("router", "key:e2e-desk", action, 409),
        ("router", "jwt:alice", action, 202),
    } <= seen
    resolved = next(
        r for r in records if (r["caller"], r["route"], r["status"]) == ("jwt:alice", action, 202)
    )
    assert resolved["targets"]["ticket_id"] == tid
    assert resolved["targets"]["event_id"] == done.json()["event_id"]
    # Reads are not recorded; nothing personal is.
    assert not any(r["route"].startswith("GET ") for r in records)
    dumped = json.dumps(records, default=str)
    assert "deposit" not in dumped and f"v-{session}" not in dumped
    assert "Sample Visitor" not in dumped

    # One key over its rate is told when to come back; the others are not slowed.
    codes = [client.get("/v1/tickets", headers=SLOW).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    limited = client.get("/v1/tickets", headers=SLOW)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert client.get("/v1/tickets", headers=DESK).status_code == 200

    # Outcomes are counted per route.
    metrics = client.get("/metrics").text
    assert 'omniroute_router_api_requests_total{outcome="limited",route="GET /v1/tickets"}' in (
        metrics
    )
    client.close()
