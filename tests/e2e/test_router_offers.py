"""Offers, presence and the queue on the real stack, with short policy timeouts.

One router process (its clock fires offer expiries and away-agent requeues), three agents:
ana and bo take offers, cy auto-accepts and starts offline. Policy from a test directory:
offers expire after 1.5 s, an away agent's accepted work is requeued after 1.5 s.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import yaml
from aiokafka import AIOKafkaProducer
from pymongo import AsyncMongoClient

from omniroute.system import DEV_TOKEN, LocalSystem
from shared.contracts.messages import MESSAGE_RECEIVED
from shared.contracts.tickets import TicketEvent
from shared.embedded import EmbeddedStack
from shared.events import make_event
from shared.settings import REPO_POLICY_DIR
from shared.topics import MESSAGES, TICKETS
from tests.support.factories import message
from tests.support.kafka import read_all
from tests.support.waiting import await_until

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": f"Bearer {DEV_TOKEN}"}
TIMEOUT_S = 1.5


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSystem]:
    root = tmp_path_factory.mktemp("router_offers")
    policy_dir = root / "policy"  # all five files, routing.yaml with short timeouts
    shutil.copytree(REPO_POLICY_DIR, policy_dir)
    routing = yaml.safe_load((policy_dir / "routing.yaml").read_text())
    routing["offer_timeout_s"] = dict.fromkeys(("chat", "email", "social", "phone"), TIMEOUT_S)
    routing["away_grace_s"] = TIMEOUT_S
    (policy_dir / "routing.yaml").write_text(yaml.safe_dump(routing))
    with EmbeddedStack(data_dir=root / "stack") as stack:
        running = LocalSystem(
            stack,
            log_dir=root / "logs",
            mongo_db="router_offers",
            env_overrides={"OMNIROUTE_POLICY_DIR": str(policy_dir)},
        )
        try:
            running.start(("router",))
            running.wait_ready(timeout_s=60)
            yield running
        finally:
            running.stop()


@pytest.fixture
async def db(system: LocalSystem) -> AsyncIterator[Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        system.mongo_uri("router"), tz_aware=True
    )
    yield client[system.database("router")]  # the router's own database
    await client.close()


async def events_of(system: LocalSystem, db: Any, ticket_id: str) -> list[TicketEvent]:
    """The ticket's events, once the log has caught up with MongoDB (stored, then sent)."""
    stored = (await db.tickets.find_one({"_id": ticket_id}))["sequence"]

    async def caught_up() -> list[TicketEvent] | None:
        out = sorted(
            (
                e
                for e in map(
                    TicketEvent.model_validate_json,
                    (r.value for r in await read_all(system.stack.kafka_bootstrap, [TICKETS])),
                )
                if e.ticket_id == ticket_id
            ),
            key=lambda e: e.sequence,
        )
        return out if out and out[-1].sequence >= stored else None

    return await await_until(caught_up, 30, f"events of {ticket_id}")


async def test_offers_expire_presence_reroutes_and_the_queue_drains(
    system: LocalSystem, db: Any
) -> None:
    router = system.url("router")
    producer = AIOKafkaProducer(bootstrap_servers=system.stack.kafka_bootstrap)
    await producer.start()

    async def send(n: int, category: str) -> str:
        now = datetime.now(UTC)
        m = message(n, category=category, sent_at=now, received_at=now)
        ev = make_event(
            m,
            topic=MESSAGES,
            event_type=MESSAGE_RECEIVED,
            event_id=m.message_id,
            source="omniroute/test",
            key=m.conversation_id,
            time=now,
        )
        await producer.send_and_wait(
            MESSAGES,
            ev.value,
            key=m.conversation_id.encode(),
            headers=[(k, v.encode()) for k, v in ev.headers.items()],
        )
        doc = await await_until(
            lambda: db.tickets.find_one({"message_ids": m.message_id}), 30, f"ticket of {n}"
        )
        return str(doc["_id"])

    async def ticket(tid: str, **expected: Any) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            doc = await db.tickets.find_one({"_id": tid})
            ok = doc is not None and all(doc.get(k) == v for k, v in expected.items())
            return doc if ok else None

        return await await_until(probe, 30, f"{tid} with {expected}")

    try:
        async with httpx.AsyncClient(base_url=router, headers=AUTH, timeout=10) as client:

            async def agent(aid: str, online: bool, **profile: Any) -> None:
                body = {"name": aid, "languages": ["en"], **profile}
                assert (await client.put(f"/v1/agents/{aid}", json=body)).status_code == 202
                status = "online" if online else "offline"
                await client.post(f"/v1/agents/{aid}/presence", json={"status": status})

                async def there() -> bool:
                    doc = await db.agents.find_one({"_id": aid})
                    return doc is not None and doc["presence"] == status

                await await_until(there, 30, f"agent {aid}")

            async def presence(aid: str, status: str) -> None:
                reply = await client.post(f"/v1/agents/{aid}/presence", json={"status": status})
                assert reply.status_code == 202

            await agent("ana", True, capacity={"chat": 2}, auto_accept=False)
            await agent("bo", True, capacity={"chat": 2}, auto_accept=False)
            await agent("cy", False, capacity={"chat": 3}, auto_accept=True)

            # 1. Offered to ana (least loaded, then by id); not accepted in time: on to bo,
            #    not back to ana.
            t1 = await send(1, "deposit")
            await ticket(t1, state="offered", agent_id="ana")
            doc = await ticket(t1, state="offered", agent_id="bo")
            assert [(e.event, e.agent_id) for e in await events_of(system, db, t1)] == [
                ("opened", None),
                ("offered", "ana"),
                ("offer_expired", "ana"),
                ("offered", "bo"),
            ]
            expired = next(e for e in await events_of(system, db, t1) if e.event == "offer_expired")
            assert expired.reasons == (f"not accepted within {TIMEOUT_S:g}s",)
            assert doc["passed_by"] == ["ana"]
            reply = await client.post(f"/v1/tickets/{t1}/accept", json={"agent_id": "bo"})
            assert reply.status_code == 202
            await ticket(t1, state="assigned", agent_id="bo")

            # 2. ana goes offline holding an offer: it is withdrawn at once and reaches bo.
            t2 = await send(2, "trading")
            await ticket(t2, state="offered", agent_id="ana")
            await presence("ana", "offline")
            await ticket(t2, state="offered", agent_id="bo")
            withdrawn = [e for e in await events_of(system, db, t2) if e.event == "offer_expired"]
            assert [(e.agent_id, e.reasons) for e in withdrawn] == [("ana", ("agent offline",))]

            # 3. Nobody can take a third ticket: it waits. cy comes online: the queue drains.
            t3 = await send(3, "general")
            waiting = await ticket(t3, state="queued", agent_id=None)
            assert waiting["decision"]["chosen"] is None
            await presence("cy", "online")
            await ticket(t3, state="assigned", agent_id="cy")

            # 4. bo leaves: the open offer (t2) goes to cy at once; bo's accepted work (t1)
            #    follows after the grace period, keeping its place in line (original age).
            before = await ticket(t1, state="assigned", agent_id="bo")
            await presence("bo", "away")
            await ticket(t2, state="assigned", agent_id="cy")
            after = await ticket(t1, state="assigned", agent_id="cy")
            assert after["waiting_since"] == before["waiting_since"]
            tail = [(e.event, e.agent_id) for e in await events_of(system, db, t1)][-2:]
            assert tail == [("reassigned", "bo"), ("assigned", "cy")]
            loads = {a["_id"]: a["load"] async for a in db.agents.find({})}
            assert loads == {"ana": {}, "bo": {}, "cy": {"chat": 3}}
    finally:
        await producer.stop()
