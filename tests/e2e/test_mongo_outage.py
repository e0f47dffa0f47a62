"""MongoDB away for 10 s: every service says it is not ready, commits no offset past work it
could not store, and recovers by itself (no restart) with nothing lost and nothing doubled.

Two ways to be away: stopped (the process is gone, the port refuses connections, then it
starts again on the same port with the same data) and frozen (SIGSTOP: connections hang
unanswered, as behind a network that drops packets, then SIGCONT).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pymongo.synchronous.database import Database

from omniroute.system import DEV_TOKEN, SERVICES, LocalSystem
from shared.embedded import EmbeddedStack
from shared.mongo import Document
from shared.topics import AGENTS, INBOUND_BY_CHANNEL, INCIDENTS, MESSAGES, PARTITIONS, SLA, TICKETS
from tests.e2e.test_crash_recovery import check_loads, publish_inbound, send
from tests.support.kafka import read_all
from tests.support.procs import alive
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": f"Bearer {DEV_TOKEN}"}
OUTAGE_S = 10.0
# Consumer group -> the topics it consumes (services/*/app.py).
GROUPS: dict[str, tuple[str, ...]] = {
    "omniroute-ingest": tuple(INBOUND_BY_CHANNEL.values()),
    "omniroute-router": (MESSAGES, AGENTS, SLA),
    "omniroute-sla": (TICKETS,),
    "omniroute-notify": (MESSAGES, TICKETS, SLA, INCIDENTS),
}
# Log records a service may write while MongoDB is away (a retry loop writes thousands).
MAX_OUTAGE_LOG_LINES = 100
Offsets = dict[TopicPartition, int]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    """A stack of its own (the conftest's `system` and `db` run on it): the session's
    MongoDB serves every other module's system and must not be stopped."""
    with EmbeddedStack(data_dir=tmp_path_factory.mktemp("mongo_outage")) as running:
        yield running


def partitions(topics: tuple[str, ...]) -> list[TopicPartition]:
    return [TopicPartition(t, p) for t in topics for p in range(PARTITIONS[t])]


async def committed_offsets(bootstrap: str) -> dict[str, Offsets]:
    """The committed offset of each partition each group consumes."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        committed: dict[str, Offsets] = {}
        for group, topics in GROUPS.items():
            # Tansu answers only for the partitions named.
            got = await admin.list_consumer_group_offsets(group, partitions=partitions(topics))
            committed[group] = {tp: max(0, meta.offset) for tp, meta in got.items()}
        return committed
    finally:
        await admin.close()


async def end_offsets(bootstrap: str) -> Offsets:
    # Not the consumer's `end_offsets`: Tansu answers the last batch's base offset + 1.
    ends = dict.fromkeys(partitions(tuple(PARTITIONS)), 0)
    for r in await read_all(bootstrap, list(PARTITIONS)):
        tp = TopicPartition(r.topic, r.partition)
        ends[tp] = max(ends[tp], r.offset + 1)
    return ends


def behind(committed: dict[str, Offsets], ends: Offsets) -> dict[str, int]:
    """How many records each group has not committed."""
    return {g: sum(ends[tp] - off for tp, off in parts.items()) for g, parts in committed.items()}


def caught_up(system: LocalSystem) -> bool:
    bootstrap = system.stack.kafka_bootstrap
    committed = asyncio.run(committed_offsets(bootstrap))
    return not any(behind(committed, asyncio.run(end_offsets(bootstrap))).values())


def readiness(system: LocalSystem, client: httpx.Client) -> dict[str, tuple[int, Any]]:
    """Every service's /readyz, asked at once (a failing check takes its 2 s timeout)."""

    def ask(name: str) -> tuple[int, Any]:
        reply = client.get(f"{system.url(name)}/readyz")
        return reply.status_code, reply.json()

    with ThreadPoolExecutor(len(SERVICES)) as pool:
        return dict(zip(SERVICES, pool.map(ask, SERVICES), strict=True))


def metric(client: httpx.Client, url: str, name: str) -> float:
    for line in client.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def log_lines(system: LocalSystem) -> dict[str, int]:
    return {n: len(Path(system.services[n].log_path).read_bytes().splitlines()) for n in SERVICES}


def refused(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
    return False


def process_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@contextlib.contextmanager
def mongo_away(stack: EmbeddedStack, outage: str) -> Iterator[None]:
    """Every service's MongoDB stopped (port refused) or frozen (SIGSTOP) inside the block,
    back after it (on the same ports, with the same data), whatever happens inside."""
    stores = [stack.mongo(s) for s in stack.stores]
    ports = [m.port for m in stores]
    pids = [m.pid for m in stores]
    if outage == "stopped":
        stack.stop_mongo()
        assert all(refused(port) for port in ports)
    else:
        stack.freeze_mongo()
        for pid in pids:
            assert pid is not None
            wait_until(lambda p=pid: process_state(p) == "T", 10, "mongodb stopped by SIGSTOP")
    try:
        yield
    finally:
        if outage == "stopped":
            stack.start_mongo()
            assert [m.port for m in stores] == ports
        else:
            stack.thaw_mongo()


@pytest.mark.parametrize("outage", ["stopped", "frozen"])
def test_services_ride_out_a_mongodb_outage(
    system: LocalSystem, db: Database[Document], outage: str
) -> None:
    stack = system.stack
    run = f"{outage}-{uuid.uuid4().hex[:6]}"
    pids = {n: system.services[n].proc.pid for n in SERVICES}  # type: ignore[union-attr]
    with httpx.Client(timeout=10) as client:
        # 1. Before: an agent online, a few messages routed, every group caught up.
        agent = f"{run}-a"
        client.put(
            f"{system.url('router')}/v1/agents/{agent}",
            headers=AUTH,
            json={
                "name": "Outage",
                "languages": ["en", "zh"],
                "auto_accept": True,
                "capacity": {"chat": 50},
            },
        ).raise_for_status()
        client.post(
            f"{system.url('router')}/v1/agents/{agent}/presence",
            headers=AUTH,
            json={"status": "online"},
        ).raise_for_status()
        before = [send(client, system, run, n) for n in range(5)]

        def routed(ids: list[str]) -> bool:
            query = {"message_ids": {"$in": ids}, "agent_id": {"$ne": None}}
            return db.tickets.count_documents(query) == len(ids)

        wait_until(lambda: routed(before), 90, "the first messages routed")
        wait_until(lambda: caught_up(system), 60, "every group committed")
        lines_before = log_lines(system)

        # 2. MongoDB goes away for OUTAGE_S.
        with mongo_away(stack, outage):
            started = time.monotonic()
            committed_at_stop = asyncio.run(committed_offsets(stack.kafka_bootstrap))
            # Adapters keep sending: the webhook only publishes (202), the topic keeps it.
            during = [send(client, system, run, n) for n in range(5, 10)]
            during += asyncio.run(publish_inbound(system, run, range(10, 15)))
            # An agent joins through the router's API, which publishes to support.agents.
            late_agent = f"{run}-b"
            client.put(
                f"{system.url('router')}/v1/agents/{late_agent}",
                headers=AUTH,
                json={"name": "Late", "languages": ["en"], "capacity": {"chat": 1}},
            ).raise_for_status()

            def none_ready() -> bool:
                return all(
                    code == 503 and body["checks"]["mongodb"].startswith("failed")
                    for code, body in readiness(system, client).values()
                )

            wait_until(none_ready, 60, "every service not ready, naming mongodb")
            for name in SERVICES:  # alive and serving: not ready is not dead
                assert client.get(f"{system.url(name)}/healthz").status_code == 200
            time.sleep(max(0.0, started + OUTAGE_S - time.monotonic()))  # the outage itself
            committed_during = asyncio.run(committed_offsets(stack.kafka_bootstrap))
            waiting = behind(committed_during, asyncio.run(end_offsets(stack.kafka_bootstrap)))
            logged = {n: lines - lines_before[n] for n, lines in log_lines(system).items()}

            # Records waited on the topics, and no group committed anything meanwhile.
            assert waiting["omniroute-ingest"] == len(during), waiting
            assert waiting["omniroute-router"] >= 1, waiting  # the late agent
            assert committed_during == committed_at_stop
            assert all(alive(pid) for pid in pids.values())
            assert max(logged.values()) <= MAX_OUTAGE_LOG_LINES, logged
            if outage == "stopped":  # refused at once: the failed batches were counted
                url = system.url("ingest")
                assert metric(client, url, "omniroute_ingest_store_errors_total") >= 1

        # 3. MongoDB is back: the services recover by themselves, none restarted.
        wait_until(
            lambda: all(code == 200 for code, _ in readiness(system, client).values()),
            90,
            "every service ready again",
        )

        def holders() -> bool:  # the engines hold their leases again and consume
            return all(
                metric(client, system.url(e), f"omniroute_{e}_lease_holder") == 1
                for e in ("router", "sla")
            )

        wait_until(holders, 60, "router and sla lease holders")
        after = [send(client, system, run, n) for n in range(15, 20)]
        ids = before + during + after
        wait_until(lambda: routed(ids), 90, "a routed ticket for every message")
        wait_until(lambda: caught_up(system), 60, "every group committed again")

    # Nothing lost, nothing doubled: one ticket per message, one event per ticket change.
    for mid in ids:
        assert db.tickets.count_documents({"message_ids": mid}) == 1, mid
    assert db.agents.find_one({"_id": late_agent}) is not None
    check_loads(db)
    ours = {t["_id"] for t in db.tickets.find({"message_ids": {"$in": ids}})}
    assert len(ours) == len(ids)
    by_seq: dict[tuple[str, int], set[str]] = defaultdict(set)
    kinds: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for r in asyncio.run(read_all(stack.kafka_bootstrap, [TICKETS])):
        ev = json.loads(r.value)
        if ev["ticket_id"] in ours:
            ce_id = dict(r.headers)["ce_id"].decode()
            by_seq[(ev["ticket_id"], ev["sequence"])].add(ce_id)
            kinds[ev["ticket_id"]][ev["event"]].add(ce_id)
    assert all(len(ce) == 1 for ce in by_seq.values())
    assert set(kinds) == ours
    assert all(len(e["opened"]) == len(e["assigned"]) == 1 for e in kinds.values()), kinds
    received = {
        dict(r.headers)["ce_id"].decode()
        for r in asyncio.run(read_all(stack.kafka_bootstrap, [MESSAGES]))
    }
    assert set(ids) <= received
    # The same processes throughout: none crashed or was restarted.
    assert {n: system.services[n].proc.pid for n in SERVICES} == pids  # type: ignore[union-attr]
    assert all(alive(pid) for pid in pids.values())
