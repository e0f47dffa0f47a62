"""Kill processes mid-run: nothing lost, nothing doubled, nobody over capacity."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections import defaultdict
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from omniroute.samples import SAMPLES, chat_message
from omniroute.system import DEV_SECRET, DEV_TOKEN, LocalSystem
from services.ingest.http import SIGNATURE_HEADER, sign
from shared.ids import message_id
from shared.topics import INBOUND_CHAT, TICKETS
from tests.support.kafka import read_all
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": f"Bearer {DEV_TOKEN}"}


def send(client: httpx.Client, system: LocalSystem, run: str, n: int) -> str:
    lang, text = SAMPLES[n % len(SAMPLES)]
    body = chat_message(
        f"{run}-s{n}",
        "m1",
        text,
        visitor_id=f"{run}-v{n}",
        locale="zh-CN" if lang == "zh" else "en-US",
    )
    reply = client.post(
        f"{system.url('ingest')}/v1/inbound/chat/generic",
        content=body,
        headers={SIGNATURE_HEADER: sign(DEV_SECRET, body)},
    )
    assert reply.status_code == 202, reply.text
    return str(reply.json()["message_ids"][0])


async def publish_inbound(system: LocalSystem, run: str, numbers: range) -> list[str]:
    producer = AIOKafkaProducer(bootstrap_servers=system.stack.kafka_bootstrap)
    await producer.start()
    try:
        for n in numbers:
            body = chat_message(
                f"{run}-s{n}", "m1", SAMPLES[n % len(SAMPLES)][1], visitor_id=f"{run}-v{n}"
            )
            await producer.send(
                INBOUND_CHAT, body, key=f"{run}-s{n}".encode(), headers=[("provider", b"generic")]
            )
        await producer.flush()
    finally:
        await producer.stop()
    return [message_id("generic", f"{run}-s{n}:m1") for n in numbers]


def check_loads(db: Any) -> None:
    holding = defaultdict(int)
    for t in db.tickets.find({"state": {"$in": ["offered", "assigned", "waiting_on_customer"]}}):
        holding[(t["agent_id"], t["channel"])] += 1
    for agent in db.agents.find({}):
        for channel, load in agent.get("load", {}).items():
            assert load == holding[(agent["_id"], channel)], (agent["_id"], channel)
            assert load <= agent["profile"]["capacity"].get(channel, 0)


@pytest.mark.parametrize("victim", ["router", "ingest"])
def test_sigkill_mid_run_loses_and_doubles_nothing(system: LocalSystem, victim: str) -> None:
    db = system.databases()
    run = f"crash-{victim}-{uuid.uuid4().hex[:6]}"
    agent = f"{run}-agent"
    with httpx.Client(timeout=10) as client:
        client.put(
            f"{system.url('router')}/v1/agents/{agent}",
            headers=AUTH,
            json={
                "name": "Crash",
                "languages": ["en", "zh"],
                "auto_accept": True,
                "capacity": {"chat": 5},
            },
        )
        client.post(
            f"{system.url('router')}/v1/agents/{agent}/presence",
            headers=AUTH,
            json={"status": "online"},
        )
        ids = [send(client, system, run, n) for n in range(30)]
        # Killed without warning while it has work in flight, then started again.
        system.kill(victim, signal.SIGKILL)
        if victim == "router":
            ids += [send(client, system, run, n) for n in range(30, 60)]
        else:
            # With ingest down, adapters keep publishing to the inbound topic.
            ids += asyncio.run(publish_inbound(system, run, range(30, 60)))
        system.start_service(victim)
        system.wait_ready(timeout_s=60, names=(victim,))
        ids += [send(client, system, run, n) for n in range(60, 80)]

    def all_ticketed() -> bool:
        return db.tickets.count_documents({"message_ids": {"$in": ids}}) == len(ids)

    wait_until(all_ticketed, 90, "a ticket for every message")
    for mid in ids:
        assert db.tickets.count_documents({"message_ids": mid}) == 1
    check_loads(db)
    # Every (ticket, sequence) on the topic is one event, however often it was re-sent.
    by_seq: dict[tuple[str, int], set[str]] = defaultdict(set)
    records = asyncio.run(read_all(system.stack.kafka_bootstrap, [TICKETS]))
    for r in records:
        ev = json.loads(r.value)
        by_seq[(ev["ticket_id"], ev["sequence"])].add(dict(r.headers)["ce_id"].decode())
    assert all(len(ids_) == 1 for ids_ in by_seq.values())
