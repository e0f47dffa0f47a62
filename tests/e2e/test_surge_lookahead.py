"""A theft report overtakes a surge (issue 15, point 6): ingest and router processes on the
real embedded stack, the look-ahead on (the default).

A surge of ordinary chat questions, each its own conversation, is produced to
support.inbound.chat as fast as the broker takes it, then one theft report. The report's
ticket must be assigned to the online security agent while most of the surge is still
unrouted: counted, not timed, by the router's own event numbers (`position`): how many
surge tickets were opened before the report's assignment. Afterwards, in the ticket log,
every message has exactly one ticket and one `opened` event: nothing lost, nothing
doubled, although the report went through ingest and the router twice (early and in
order). A second report, from a customer whose question is still waiting late in the
surge, keeps its place behind that question (conversation order): the question opens
their ticket and the report joins it.

The router on its own: a surge published straight to support.messages (as ingest would
publish it when the router is the one behind), then a P1 message; the router's look-ahead
applies it through the engine's step before the in-order consumer reaches it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from omniroute.samples import chat_message
from omniroute.system import DEV_TOKEN, LocalSystem
from shared.embedded import EmbeddedStack
from shared.events import OutboundEvent
from shared.ids import message_id
from shared.topics import INBOUND_CHAT, MESSAGES, PARTITIONS, TICKETS
from tests.support.engines import metric
from tests.support.factories import message_event
from tests.support.kafka import read_all
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": f"Bearer {DEV_TOKEN}"}
SURGE = 1_500
QUESTIONS = (
    "How do I change the fee tier on my spot trading account? order {n}",
    "What are the trading fees for futures this month? ref {n}",
    "Where can I see the history of my limit orders, number {n}",
    "How do I turn on the dark theme in the app? question {n}",
    "Can you explain how the referral programme works? {n}",
)
CHAT = [("provider", b"generic")]
THEFT = "Someone logged into my account and withdrew all my BTC, I did not authorize this!"


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSystem]:
    root = tmp_path_factory.mktemp("surge_lookahead")
    with EmbeddedStack(data_dir=root / "stack") as stack:
        running = LocalSystem(stack, log_dir=root / "logs", mongo_db="surge_lookahead")
        try:
            running.start(("ingest", "router"))
            running.wait_ready(timeout_s=90)
            yield running
        finally:
            running.stop()


def security_agent_online(system: LocalSystem) -> None:
    # Takes only emergencies, so the surge's tickets queue and the report's is assigned.
    with httpx.Client(base_url=system.url("router"), headers=AUTH, timeout=10) as http:
        http.put(
            "/v1/agents/ag-sec",
            json={
                "name": "Security desk",
                "skills": ["stolen_funds", "account_takeover", "secret_exposed"],
                "languages": ["en", "zh"],
                "capacity": {"chat": 3},
                "auto_accept": True,
                "security": True,
            },
        ).raise_for_status()
        http.post("/v1/agents/ag-sec/presence", json={"status": "online"}).raise_for_status()
        wait_until(
            lambda: http.get("/v1/agents/ag-sec").json().get("presence") == "online",
            30,
            "the agent online in the router",
        )


@asynccontextmanager
async def tickets_from_now(
    bootstrap: str,
) -> AsyncIterator[tuple[AIOKafkaConsumer, AIOKafkaProducer]]:
    """A reader of support.tickets from its current end, and a producer."""
    tickets = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await tickets.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        parts = [TopicPartition(TICKETS, p) for p in range(PARTITIONS[TICKETS])]
        tickets.assign(parts)
        await tickets.seek_to_end(*parts)
        yield tickets, producer
    finally:
        await producer.stop()
        await tickets.stop()


async def surge_then_report(system: LocalSystem, run: str) -> tuple[dict[str, Any], float]:
    """Produce the surge and the report; return the report's assignment and its latency."""
    async with tickets_from_now(system.stack.kafka_bootstrap) as (tickets, producer):
        for n in range(SURGE):
            text = QUESTIONS[n % len(QUESTIONS)].format(n=n)
            raw = chat_message(f"{run}-q{n}", "m1", text, visitor_id=f"{run}-v{n}")
            await producer.send(INBOUND_CHAT, raw, key=f"{run}-q{n}".encode(), headers=CHAT)
            if n == SURGE - 10:
                # A question late in the surge, whose author reports a theft next.
                raw = chat_message(f"{run}-mixed", "m1", text, visitor_id=f"{run}-mixed")
                await producer.send(INBOUND_CHAT, raw, key=f"{run}-mixed".encode(), headers=CHAT)
        await producer.flush()
        raw = chat_message(f"{run}-theft", "m1", THEFT, visitor_id=f"{run}-victim")
        sent = time.monotonic()
        await producer.send_and_wait(INBOUND_CHAT, raw, key=f"{run}-theft".encode(), headers=CHAT)
        raw = chat_message(f"{run}-mixed", "m2", THEFT, visitor_id=f"{run}-mixed")
        await producer.send_and_wait(INBOUND_CHAT, raw, key=f"{run}-mixed".encode(), headers=CHAT)
        report = message_id("generic", f"{run}-theft:m1")
        opened: str | None = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for records in (await tickets.getmany(timeout_ms=100)).values():
                for r in records:
                    ev = json.loads(r.value)
                    if ev.get("message_id") == report and ev["event"] == "opened":
                        opened = ev["ticket_id"]
                    if ev["ticket_id"] == opened and ev["event"] in ("offered", "assigned"):
                        return ev, time.monotonic() - sent
        raise AssertionError("the report was never offered")


def warm_up(system: LocalSystem, run: str) -> None:
    """One ordinary message all the way to a ticket: both services consume (and read ahead)."""

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=system.stack.kafka_bootstrap)
        await producer.start()
        try:
            raw = chat_message(f"{run}-warm", "m1", QUESTIONS[0].format(n=0))
            await producer.send_and_wait(INBOUND_CHAT, raw, headers=[("provider", b"generic")])
        finally:
            await producer.stop()

    asyncio.run(send())
    with httpx.Client(base_url=system.url("router"), headers=AUTH, timeout=10) as http:
        wait_until(
            lambda: http.get("/v1/tickets", params={"state": "queued"}).json(),
            60,
            "the warm-up message's ticket",
        )
    for service in ("ingest", "router"):
        url, running = system.url(service), f"omniroute_{service}_lookahead_running"

        def reading(url: str = url, running: str = running) -> bool:
            return metric(url, running) == 1

        wait_until(reading, 60, running)


def log_with(system: LocalSystem, ids: list[str]) -> list[dict[str, Any]] | None:
    """Every ticket event so far, once each of `ids` has caused one."""
    log = asyncio.run(read_all(system.stack.kafka_bootstrap, [TICKETS]))
    events = [json.loads(r.value) for r in log]
    return events if set(ids) <= {e.get("message_id") for e in events} else None


def test_a_theft_report_overtakes_the_surge_and_nothing_is_lost_or_doubled(
    system: LocalSystem,
) -> None:
    security_agent_online(system)
    run = uuid.uuid4().hex[:8]
    warm_up(system, run)

    given, latency_s = asyncio.run(surge_then_report(system, run))
    assert given["agent_id"] == "ag-sec" and given["priority"] == "P1"

    # Every message becomes a ticket, the surge's included: read from the ticket log (the
    # public contract), every event naming the message that caused it.
    surge_ids = [message_id("generic", f"{run}-q{n}:m1") for n in range(SURGE)]
    report = message_id("generic", f"{run}-theft:m1")
    question, second = (message_id("generic", f"{run}-mixed:{m}") for m in ("m1", "m2"))
    firsts = [*surge_ids, report, question, message_id("generic", f"{run}-warm:m1")]
    events = wait_until(lambda: log_with(system, [*firsts, second]), 180, "every message's ticket")
    tickets_of: dict[str, set[str]] = {}
    for e in events:
        if e.get("message_id"):
            tickets_of.setdefault(e["message_id"], set()).add(e["ticket_id"])
    assert all(len(tickets_of[m]) == 1 for m in [*firsts, second])
    opened = Counter(e["message_id"] for e in events if e["event"] == "opened")
    assert opened == Counter(dict.fromkeys(firsts, 1))
    # The second report waited for its conversation's question: the question opened the
    # ticket and the report joined it.
    assert tickets_of[second] == tickets_of[question]

    # The surge's tickets opened before the report's assignment (router event numbers).
    surge = set(surge_ids)
    ahead = sum(
        1
        for e in events
        if e["event"] == "opened" and e["message_id"] in surge and e["position"] < given["position"]
    )
    print(
        f"\nsurge {SURGE}: report assigned {latency_s * 1000:.0f} ms after it was sent,"
        f" {ahead} surge tickets opened before it"
    )
    # The report went ahead in ingest (the router's look-ahead acts when it is behind too).
    assert metric(system.url("ingest"), "omniroute_ingest_lookahead_promoted_total") >= 1
    assert ahead < SURGE // 2, f"{ahead} of {SURGE} surge tickets were routed before the report"


def ce(e: OutboundEvent) -> list[tuple[str, bytes]]:
    return [(k, v.encode()) for k, v in e.headers.items()]


async def surge_of_messages(
    system: LocalSystem, run: str, size: int
) -> tuple[dict[str, Any], float]:
    """`size` ordinary messages on support.messages, then a P1 one; its assignment, latency."""
    now = datetime.now(UTC)

    def event(n: int, category: str) -> OutboundEvent:
        return message_event(
            n,
            message_id=f"msg_{run}_{n}",
            conversation_id=f"cnv_{run}_{n}",
            customer_id=f"cus_{run}_{n}",
            category=category,
            sent_at=now,
            received_at=now,
        )

    async with tickets_from_now(system.stack.kafka_bootstrap) as (tickets, producer):
        for e in [event(n, "trading") for n in range(size)]:
            await producer.send(MESSAGES, e.value, key=(e.key or "").encode(), headers=ce(e))
        await producer.flush()
        e = event(size, "stolen_funds")
        sent = time.monotonic()
        await producer.send_and_wait(MESSAGES, e.value, key=(e.key or "").encode(), headers=ce(e))
        report = f"msg_{run}_{size}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for records in (await tickets.getmany(timeout_ms=100)).values():
                for r in records:
                    ev = json.loads(r.value)
                    if ev.get("message_id") == report and ev["event"] in ("offered", "assigned"):
                        return ev, time.monotonic() - sent
        raise AssertionError("the P1 message was never offered")


def test_the_router_applies_a_p1_message_ahead_of_its_backlog(system: LocalSystem) -> None:
    security_agent_online(system)
    run, size = uuid.uuid4().hex[:8], 3 * SURGE
    promoted = metric(system.url("router"), "omniroute_router_lookahead_promoted_total")

    given, latency_s = asyncio.run(surge_of_messages(system, run, size))
    assert given["agent_id"] == "ag-sec" and given["priority"] == "P1"

    # Every message one ticket, opened once; count the backlog's tickets opened before.
    ids = [f"msg_{run}_{n}" for n in range(size + 1)]

    def opened_events() -> list[dict[str, Any]] | None:
        log = asyncio.run(read_all(system.stack.kafka_bootstrap, [TICKETS]))
        events = [json.loads(r.value) for r in log]
        mine = [e for e in events if e["event"] == "opened" and e["message_id"] in ids]
        return mine if len({e["message_id"] for e in mine}) == len(ids) else None

    opened = wait_until(opened_events, 180, "every message opened")
    assert Counter(e["message_id"] for e in opened) == Counter(dict.fromkeys(ids, 1))
    ahead = sum(1 for e in opened if e["position"] < given["position"])
    print(
        f"\nrouter backlog {size}: P1 assigned {latency_s * 1000:.0f} ms after it was sent,"
        f" {ahead} backlog tickets opened before it"
    )
    assert metric(system.url("router"), "omniroute_router_lookahead_promoted_total") > promoted
    assert ahead < size // 2, f"{ahead} of {size} backlog tickets were routed before the P1"
