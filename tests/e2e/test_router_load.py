"""The router under load on the real embedded stack, with a standby and a SIGKILL mid-run.

Two router processes (one holds the lease, one stands by), six agents with mixed skills,
languages and capacity (most auto-accept; two take offers and accept, decline or ignore
them), and 2,000 tickets of mixed priorities and channels produced as fast as the broker
takes them. A desk simulator works the tickets (accept, decline, reply, resolve) from the
live ticket log. The active router is SIGKILLed mid-run; the standby takes over.

Afterwards the whole `support.tickets` log is replayed in decision order (`position`) by
services.router.audit.Auditor: every give within capacity (or the one P1 emergency slot),
no lower priority given while a higher one the agent could take waited, one routing
decision per opening, gap-free sequences and positions; the same event id always carries
the same event; and MongoDB agrees with the log ticket by ticket and agent by agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import shutil
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pymongo import AsyncMongoClient

from omniroute.system import DEV_TOKEN, LocalSystem
from services.router.audit import Auditor
from services.router.priority import load_policy
from shared.contracts.agents import AGENT_ACTION_TAKEN, AgentActionTaken, AgentProfile
from shared.contracts.common import PROVIDERS_BY_CHANNEL, Category, Channel
from shared.contracts.messages import MESSAGE_RECEIVED, MessageReceived
from shared.contracts.tickets import TicketEvent
from shared.embedded import EmbeddedStack
from shared.events import OutboundEvent, make_event
from shared.settings import REPO_POLICY_DIR
from shared.topics import AGENTS, MESSAGES, TICKETS
from tests.support.factories import message
from tests.support.kafka import read_all
from tests.support.waiting import await_until

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": f"Bearer {DEV_TOKEN}"}
TICKETS_WANTED = 2_000
RESOLVES_BEFORE_KILL = 300
RESOLVES_IN_ALL = 1_200
OFFER_TIMEOUT_S = 1.5

ALL_SKILLS: tuple[Category, ...] = ()
TEAM: dict[str, dict[str, Any]] = {
    "ag-lin": {  # bilingual generalist, security
        "languages": ["en", "zh"],
        "capacity": {"chat": 3, "email": 5, "social": 3, "phone": 1},
        "auto_accept": True,
        "security": True,
    },
    "ag-sam": {  # money matters, English
        "skills": ["stolen_funds", "account_takeover", "secret_exposed", "withdrawal", "deposit"],
        "languages": ["en"],
        "capacity": {"chat": 2, "email": 4},
        "auto_accept": True,
    },
    "ag-wei": {  # Chinese social and chat
        "languages": ["zh"],
        "capacity": {"chat": 3, "social": 4},
        "auto_accept": True,
    },
    "ag-ana": {  # account access and trading, takes offers
        "skills": ["login_2fa", "kyc", "scam_report", "trading", "general"],
        "languages": ["en", "zh"],
        "capacity": {"chat": 2, "email": 3, "social": 2, "phone": 1},
        "auto_accept": False,
    },
    "ag-joe": {  # email and phone, security, takes offers
        "languages": ["en"],
        "capacity": {"email": 6, "phone": 1},
        "auto_accept": False,
        "security": True,
    },
    "ag-mei": {  # money and trading in both languages
        "skills": ["deposit", "withdrawal", "trading", "general"],
        "languages": ["zh", "en"],
        "capacity": {"chat": 4, "social": 3},
        "auto_accept": True,
    },
}

# Realistic mixes: chat and social busiest, most traffic about money and trading, a few
# percent stolen funds / takeovers / exposed secrets.
CHANNEL_MIX: dict[Channel, int] = {"chat": 40, "email": 25, "social": 25, "phone": 10}
CATEGORY_MIX: dict[Category, int] = {
    "stolen_funds": 3,
    "account_takeover": 2,
    "secret_exposed": 1,
    "withdrawal": 15,
    "deposit": 15,
    "login_2fa": 10,
    "kyc": 8,
    "scam_report": 3,
    "trading": 18,
    "general": 25,
}
TIER_MIX = {"standard": 85, "vip1": 8, "vip3": 5, "vip5": 2}


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalSystem, str]]:
    # A stack of its own: the replay needs this module's ticket log and nothing else.
    root = tmp_path_factory.mktemp("router_load")
    policy_dir = root / "policy"
    shutil.copytree(REPO_POLICY_DIR, policy_dir)
    routing = yaml.safe_load((policy_dir / "routing.yaml").read_text())
    routing["offer_timeout_s"] = dict.fromkeys(CHANNEL_MIX, OFFER_TIMEOUT_S)
    (policy_dir / "routing.yaml").write_text(yaml.safe_dump(routing))
    with EmbeddedStack(data_dir=root / "stack") as stack:
        system = LocalSystem(
            stack,
            log_dir=root / "logs",
            mongo_db="router_load",
            env_overrides={"OMNIROUTE_POLICY_DIR": str(policy_dir), "OMNIROUTE_LEASE_TTL_S": "3"},
        )
        try:
            system.start(("router",))
            standby = system.add_replica("router")
            system.wait_ready(timeout_s=60)
            yield system, standby
        finally:
            system.stop()


def pick(rng: random.Random, mix: dict[Any, int]) -> Any:
    return rng.choices(list(mix), weights=list(mix.values()))[0]


def workload(run: str) -> tuple[list[MessageReceived], int]:
    """(messages, tickets they should make): new conversations, replies, second channels."""
    rng = random.Random(run)
    now = datetime.now(UTC)
    out: list[MessageReceived] = []
    firsts: list[MessageReceived] = []

    def build(n: int, conversation: str, customer: str, channel: Channel, **over: Any) -> None:
        out.append(
            message(
                n,
                message_id=f"msg_{run}_{n}",
                conversation_id=conversation,
                customer_id=customer,
                channel=channel,
                provider=PROVIDERS_BY_CHANNEL[channel][0],
                provider_message_id=f"{run}-{n}",
                sent_at=now,
                received_at=now,
                **over,
            )
        )

    for n in range(TICKETS_WANTED):
        language = "zh" if rng.random() < 0.35 else "en"
        build(
            n,
            f"cnv_{run}_{n}",
            f"cus_{run}_{n}",
            pick(rng, CHANNEL_MIX),
            category=pick(rng, CATEGORY_MIX),
            language=language,
            customer_tier=pick(rng, TIER_MIX),
            text="示例" if language == "zh" else "example",
        )
        firsts.append(out[-1])
    n = TICKETS_WANTED
    # Customers writing again in their conversation: the message joins the ticket.
    for first in rng.sample(firsts, 150):
        build(n, first.conversation_id, first.customer_id, first.channel, language=first.language)
        n += 1
    # Stolen funds reported again on another channel: one case, not a second ticket.
    urgent = [m for m in firsts if m.category in ("stolen_funds", "account_takeover")]
    for first in urgent[:30]:
        other: Channel = "email" if first.channel != "email" else "chat"
        build(
            n,
            f"cnv_{run}_{n}",
            first.customer_id,
            other,
            category=first.category,
            language=first.language,
        )
        n += 1
    return out, TICKETS_WANTED


def as_event(data: Any, topic: str, event_type: str, event_id: str, key: str) -> OutboundEvent:
    return make_event(
        data,
        topic=topic,
        event_type=event_type,
        event_id=event_id,
        source="omniroute/test",
        key=key,
        time=datetime.now(UTC),
    )


async def send(producer: AIOKafkaProducer, events: list[OutboundEvent]) -> None:
    futures = [
        await producer.send(
            e.topic,
            e.value,
            key=e.key.encode() if e.key else None,
            headers=[(k, v.encode()) for k, v in e.headers.items()],
        )
        for e in events
    ]
    await asyncio.gather(*futures)


class Desk:
    """Simulated agents at their desks, reacting to the live ticket log."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self.offers: dict[str, tuple[str, int]] = {}  # ticket -> (agent, sequence)
        self.opened: set[str] = set()
        self.resolves = 0
        self.wrapping_up = False
        self.done = asyncio.Event()

    async def reached(self, resolves: int) -> bool:
        return self.resolves >= resolves

    def _choose(self, ticket_id: str, seq: int) -> str:
        digest = hashlib.sha256(f"{ticket_id}:{seq}".encode()).digest()[0] % 10
        return "accept" if digest < 6 else "decline" if digest < 8 else "ignore"

    async def act(self, agent: str, ticket: str, action: str, seq: int) -> None:
        ev = AgentActionTaken(agent_id=agent, ticket_id=ticket, action=action, at=datetime.now(UTC))  # type: ignore[arg-type]
        eid = f"desk-{ticket}-{seq}-{action}"
        await send(self.producer, [as_event(ev, AGENTS, AGENT_ACTION_TAKEN, eid, agent)])

    async def on(self, ev: TicketEvent) -> None:
        if ev.event == "opened":
            self.opened.add(ev.ticket_id)
        if ev.event == "offered" and ev.agent_id:
            self.offers[ev.ticket_id] = (ev.agent_id, ev.sequence)
            choice = "accept" if self.wrapping_up else self._choose(ev.ticket_id, ev.sequence)
            if choice != "ignore":
                await self.act(ev.agent_id, ev.ticket_id, choice, ev.sequence)
        elif ev.event in ("accepted", "offer_expired"):
            self.offers.pop(ev.ticket_id, None)
        working = not self.wrapping_up and self.resolves < RESOLVES_IN_ALL
        if ev.event in ("assigned", "accepted") and ev.agent_id and working:
            self.resolves += 1
            if ev.sequence % 3 == 0:
                await self.act(ev.agent_id, ev.ticket_id, "reply", ev.sequence)
            await self.act(ev.agent_id, ev.ticket_id, "resolve", ev.sequence)

    async def wrap_up(self) -> None:
        """Stop resolving; accept whatever is on offer, so the system comes to rest."""
        self.wrapping_up = True
        for ticket, (agent, seq) in list(self.offers.items()):
            await self.act(agent, ticket, "accept", seq)

    async def follow(self, bootstrap: str) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            parts = [TopicPartition(TICKETS, p) for p in range(4)]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            seen: set[str] = set()
            while not self.done.is_set():
                batch = await consumer.getmany(*parts, timeout_ms=100)
                for records in batch.values():
                    for r in records:
                        eid = dict(r.headers)["ce_id"].decode()
                        if eid not in seen:  # re-published after the crash
                            seen.add(eid)
                            await self.on(TicketEvent.model_validate_json(r.value))
        finally:
            await consumer.stop()


async def lease_holder(client: httpx.AsyncClient, system: LocalSystem, names: list[str]) -> str:
    async def probe() -> str | None:
        holders = []
        for name in names:
            with contextlib.suppress(httpx.HTTPError):
                text = (await client.get(f"{system.url(name)}/metrics")).text
                if "\nomniroute_router_lease_holder 1.0" in text:
                    holders.append(name)
        return holders[0] if len(holders) == 1 else None

    return await await_until(probe, 30, "exactly one router holding the lease")


async def test_two_thousand_tickets_with_a_failover(rig: tuple[LocalSystem, str]) -> None:
    system, standby = rig
    started = time.monotonic()
    run = "load"
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        system.mongo_uri("router"), tz_aware=True
    )
    db = mongo[system.database("router")]
    producer = AIOKafkaProducer(bootstrap_servers=system.stack.kafka_bootstrap, linger_ms=5)
    await producer.start()
    desk = Desk(producer)
    follower = asyncio.create_task(desk.follow(system.stack.kafka_bootstrap))
    try:
        async with httpx.AsyncClient(timeout=10, headers=AUTH) as client:
            # Six agents through the router's API, all online before the traffic.
            for aid, profile in TEAM.items():
                body = {"name": aid, **profile}
                reply = await client.put(f"{system.url('router')}/v1/agents/{aid}", json=body)
                assert reply.status_code == 202, reply.text
                await client.post(
                    f"{system.url('router')}/v1/agents/{aid}/presence", json={"status": "online"}
                )

            async def team_online() -> bool:
                return await db.agents.count_documents({"presence": "online"}) == len(TEAM)

            await await_until(team_online, 30, "six agents online")
            active = await lease_holder(client, system, ["router", standby])

            # The traffic, straight to support.messages as fast as the broker takes it
            # (ingest's own path, webhooks and parsers, is covered by its tests).
            messages, expected_tickets = workload(run)
            await send(
                producer,
                [
                    as_event(m, MESSAGES, MESSAGE_RECEIVED, m.message_id, m.conversation_id)
                    for m in messages
                ],
            )

            # Mid-run, with tickets flowing and the desk working: kill the lease holder.
            await await_until(lambda: desk.reached(RESOLVES_BEFORE_KILL), 60, "desk at work")
            system.kill(active, signal.SIGKILL)
            survivor = standby if active == "router" else "router"
            assert await lease_holder(client, system, [survivor]) == survivor

            async def all_ticketed() -> bool:
                ids = [m.message_id for m in messages]
                return await db.tickets.count_documents({"message_ids": {"$in": ids}}) == (
                    expected_tickets
                )

            await await_until(all_ticketed, 60, "a ticket for every conversation")
            await await_until(lambda: desk.reached(RESOLVES_IN_ALL), 60, "the desk's day of work")
            await desk.wrap_up()

            # At rest: no offer outstanding, and the log has caught up with MongoDB.
            async def at_rest() -> list[TicketEvent] | None:
                if await db.tickets.count_documents({"state": "offered"}):
                    return None
                log = await ticket_log(system)
                last = {e.ticket_id: e.sequence for e in log}
                docs = await db.tickets.find({}, {"sequence": 1}).to_list(None)
                if any(last.get(d["_id"]) != d["sequence"] for d in docs):
                    return None
                return log

            log = await await_until(at_rest, 60, "the system at rest")
    finally:
        desk.done.set()
        await follower
        await producer.stop()

    # Replay the whole log in decision order.
    policy = load_policy(Path(system.env_overrides["OMNIROUTE_POLICY_DIR"]) / "routing.yaml")
    auditor = Auditor(policy)
    for aid, profile in TEAM.items():
        auditor.set_agent(aid, AgentProfile.model_validate({"name": aid, **profile}), "online")
    violations = auditor.apply_all(log)
    assert violations == [], violations[:10]
    assert auditor.position == len(log)  # positions 1..N, none lost over the failover
    assert auditor.unrouted() == []  # every opening got its routing decision
    assert len(auditor.tickets) == expected_tickets  # no ticket doubled, none missing
    # The checks had something to check.
    assert auditor.gives > RESOLVES_IN_ALL
    print(
        f"\nrouter load: {len(log)} events, {auditor.gives} gives "
        f"({auditor.emergency_gives} emergency, {auditor.contested} contested), "
        f"{Counter(e.event for e in log)}, {time.monotonic() - started:.1f}s"
    )
    assert auditor.contested > 0  # gives while higher priorities waited for other agents
    assert auditor.emergency_gives > 0  # P1s took the emergency slot of security agents
    kinds = Counter(e.event for e in log)
    assert kinds["offer_expired"] > 0 and kinds["accepted"] > 0 and kinds["queued"] > 0
    assert sum(len(e.conversation_ids) > 1 for e in log if e.event == "message_added") > 0

    # MongoDB agrees with the log: every message in exactly one ticket, every ticket's
    # state and agent as replayed, every agent's load equal to their open assignments.
    docs = {d["_id"]: d async for d in db.tickets.find({})}
    assert len(docs) == expected_tickets
    owners = Counter(mid for d in docs.values() for mid in d["message_ids"])
    assert set(owners) == {m.message_id for m in messages}
    assert max(owners.values()) == 1
    for tid, t in auditor.tickets.items():
        assert (docs[tid]["state"], docs[tid]["agent_id"] if t.agent_id else None) == (
            t.state,
            t.agent_id,
        ), tid
    holding: dict[tuple[str, str], int] = defaultdict(int)
    for d in docs.values():
        if d["state"] in ("offered", "assigned", "waiting_on_customer"):
            holding[(d["agent_id"], d["channel"])] += 1
    assert dict(holding) == auditor.holding()
    async for agent in db.agents.find({}):
        load = {ch: n for ch, n in agent["load"].items() if n}
        assert load == {ch: n for (a, ch), n in holding.items() if a == agent["_id"]}, agent["_id"]
    await mongo.close()
    assert time.monotonic() - started < 90


async def ticket_log(system: LocalSystem) -> list[TicketEvent]:
    """The ticket log in decision order, each event once; the same id is the same event."""
    by_id: dict[str, bytes] = {}
    for r in await read_all(system.stack.kafka_bootstrap, [TICKETS]):
        eid = dict(r.headers)["ce_id"].decode()
        assert by_id.setdefault(eid, r.value) == r.value, f"{eid} published with two contents"
    events = [TicketEvent.model_validate_json(v) for v in by_id.values()]
    return sorted(events, key=lambda e: e.position or 0)
