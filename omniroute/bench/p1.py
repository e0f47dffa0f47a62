"""P1 time-to-offer behind a backlog, measured while notify still sends its acknowledgements.

The backlog (`backlog` messages, none of them P1) is published at once and the router queues
it all: no agent is online yet. One agent then comes online with room for one chat and takes
the best waiting chat. Each sample: a stolen-funds chat arrives and is queued (the agent is
busy); the agent resolves the ticket it holds; that P1, the best waiting ticket the agent can
take, is offered to it. The figure runs from the resolve call to the P1's offer on
support.tickets, as a desk sees it (read with a 2 ms fetch wait: Tansu holds a fetch for its
whole wait, so the reader's poll is part of every figure, at most 2 ms of it here).

Sampling starts as soon as the backlog is queued, while notify is still recording and sending
one acknowledgement per backlog ticket: each sample notes how many were outstanding (from
notify's own announcements on support.notifications), so a run in which notify finished
first shows it.

Two kinds of samples, alternating. On this machine every process shares its few cores: the
router waits for a core behind notify, its store and ingest at each of the P1 path's hops
(the API, Kafka's acknowledgement, the journal insert, the publish, the desk's read), and
priorities within the time-sharing scheduler (nice 10 or 19 for the others) did not change
that (docs/benchmarks.md). A deployment keeps the P1 path off notify's CPUs: the router gets
a whole core (deploy/base/router.yaml: Guaranteed QoS, exclusive with the kubelet's static
CPU manager), and Kafka and MongoDB are expected on nodes of their own, the desk on the
agent's machine. The stand-in here: every other sample is taken with those processes
(`p1_path`) at real-time priority (SCHED_FIFO, for that sample only) while notify, sla,
ingest and their stores go on at normal priority on what is left: `shared` and `own_cpu`
in the results. It is the favourable case: real-time preempts at once (a core of its own
is merely free), the one broker then serves notify's requests at real-time priority too,
and the measuring desk gets the same. Where real-time scheduling is refused (no
CAP_SYS_NICE) the results say so.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from omniroute.bench.kit import (
    AUTH,
    Follower,
    TicketWatcher,
    add_agents,
    bucket_quantiles,
    histogram_buckets,
    ms,
    produce,
)
from omniroute.bench.load import generate
from omniroute.system import DEV_SECRET, LocalSystem
from services.ingest.classify import ClassifyPolicy, classify_many, load_rules
from services.ingest.http import SIGNATURE_HEADER, sign
from services.ingest.model import ParserConfig
from services.ingest.pipeline import Prepared
from services.ingest.pipeline import load_policy as load_ingest_policy
from services.ingest.textmodel import TextModel
from services.ingest.training import load_or_train
from services.router.priority import load_policy as load_routing_policy
from shared.settings import IngestSettings
from shared.topics import NOTIFICATIONS

P1_TEXT = "Someone stole all my BTC, unauthorized withdrawal!"
ACK_DONE = {"sent", "dead"}  # dead: given up, nothing left to send either


@dataclass(frozen=True)
class Given:
    """A ticket offered or assigned to an agent, as support.tickets told it."""

    ticket_id: str
    agent_id: str
    decided_at: datetime  # the router's clock when it decided
    arrived: float  # perf_counter when the event reached the benchmark


class TicketLog(TicketWatcher):
    """support.tickets as the P1 scenario needs it: which ticket each message opened, how it
    was first routed, and what each agent was given."""

    def __init__(self, bootstrap: str) -> None:
        # A 2 ms poll: the bench's own wait on Tansu (see Follower) is at most a tenth of
        # the 20 ms the figure is held to, instead of half of it.
        super().__init__(bootstrap, fetch_max_wait_ms=2)
        self.ticket_of: dict[str, str] = {}  # message id -> ticket id
        # ticket id -> (event, priority, category, channel) of its first routing
        self.first_routed: dict[str, tuple[str, str, str, str]] = {}
        self.given: dict[str, Given] = {}  # ticket id -> its first offer
        self.given_to: dict[str, list[Given]] = {}  # agent id -> its offers, in order

    def take(self, value: dict[str, Any], now: float) -> None:
        super().take(value, now)
        tid, mid, event = value["ticket_id"], value.get("message_id"), value["event"]
        if event == "opened" and mid:
            self.ticket_of[mid] = tid
        if event in ("queued", "offered", "assigned") and tid not in self.first_routed:
            self.first_routed[tid] = (event, value["priority"], value["category"], value["channel"])
        if event in ("offered", "assigned") and value.get("agent_id"):
            g = Given(tid, value["agent_id"], datetime.fromisoformat(value["at"]), now)
            self.given.setdefault(tid, g)
            self.given_to.setdefault(g.agent_id, []).append(g)

    async def offer_of(self, ticket_id: str, timeout_s: float) -> Given:
        """The ticket's first offer (or assignment), once it arrives."""
        await self.wait_until(
            lambda: ticket_id in self.given, timeout_s, f"{ticket_id} not offered"
        )
        return self.given[ticket_id]


class Acknowledgements(Follower):
    """support.notifications: the tickets whose acknowledgement notify has sent (or given
    up on)."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(bootstrap, NOTIFICATIONS)
        self.done: set[str] = set()

    def take(self, value: dict[str, Any], now: float) -> None:
        if value.get("cause") == "acknowledgement" and value.get("status") in ACK_DONE:
            self.done.add(value["ticket_id"])


@dataclass(frozen=True)
class Ingest:
    """What ingest makes of a message, worked out here with the services' default settings:
    the backlog is drawn from messages it leaves below P1, so the P1 measured is the best
    waiting ticket."""

    parser: ParserConfig
    rules: ClassifyPolicy
    model: TextModel
    p1_categories: frozenset[str]

    @classmethod
    def load(cls) -> Ingest:
        settings = IngestSettings()
        rules = load_rules(settings.policy_dir / "classify.yaml")
        routing = load_routing_policy(settings.policy_dir / "routing.yaml")
        return cls(
            parser=load_ingest_policy(settings.policy_dir / "ingest.yaml").parser,
            rules=rules,
            model=load_or_train(settings.classifier_model, settings.classifier_corpus, rules),
            p1_categories=frozenset(routing.priorities["P1"]),
        )

    def below_p1(self, batch: Sequence[Prepared]) -> list[bool]:
        found = classify_many([p.to_classify() for p in batch], self.model, self.rules)
        return [c.category not in self.p1_categories and c.possible_urgent is None for c in found]


async def post_p1_chat(client: httpx.AsyncClient, ingest_url: str, n: int) -> str:
    """A stolen-funds chat through ingest's webhook; returns its message id."""
    body = json.dumps(
        {
            "session_id": f"p1-{uuid.uuid4().hex}",
            "message_id": "m1",
            "visitor": {"id": f"p1v{n}"},
            "text": P1_TEXT,
        }
    ).encode()
    reply = await client.post(
        f"{ingest_url}/v1/inbound/chat/generic",
        content=body,
        headers={SIGNATURE_HEADER: sign(DEV_SECRET, body)},
    )
    reply.raise_for_status()
    [mid] = reply.json()["message_ids"]
    return str(mid)


REALTIME = 10  # SCHED_FIFO priority of the P1 path in the samples at real-time priority
# Threads (and processes) a real-time thread starts run at normal priority: nothing started
# during a sample stays real-time after it.
FIFO = os.SCHED_FIFO | os.SCHED_RESET_ON_FORK
OWN_CPU, SHARED = "own_cpu", "shared"


def schedule(processes: Mapping[str, int], policy: int, priority: int) -> None:
    """`policy` (FIFO, os.SCHED_OTHER) at `priority` for every thread of each process (the
    policy is per thread on Linux). A process or thread that has ended is passed over.
    PermissionError without the right to (CAP_SYS_NICE)."""
    for pid in processes.values():
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue
        for tid in threads:
            with contextlib.suppress(ProcessLookupError):
                os.sched_setscheduler(int(tid), policy, os.sched_param(priority))


def realtime(pid: int) -> bool:
    """Whether the process's main thread runs at real-time priority (SCHED_FIFO)."""
    return os.sched_getscheduler(pid) & ~os.SCHED_RESET_ON_FORK == os.SCHED_FIFO


@contextlib.contextmanager
def first_on_cpu(processes: Mapping[str, int]) -> Iterator[None]:
    """`processes` run ahead of every other process of the machine (real-time, SCHED_FIFO)
    while inside, and at normal priority (SCHED_OTHER) after — also when the body raised,
    setting it was refused or one of them has ended meanwhile. This process first, so that
    nothing the benchmark starts later can inherit the real-time policy."""
    mine = os.getpid()
    order = sorted(processes.items(), key=lambda item: item[1] != mine)
    try:
        schedule(processes, FIFO, REALTIME)
        yield
    finally:
        for name, pid in order:
            schedule({name: pid}, os.SCHED_OTHER, 0)


def may_put_first(processes: Mapping[str, int]) -> str | None:
    """None if `first_on_cpu` works here, else why not (e.g. no CAP_SYS_NICE)."""
    try:
        with first_on_cpu(processes):
            return None
    except PermissionError as exc:
        return f"real-time scheduling refused: {exc.strerror or exc}"


def summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The samples' figures: the time to offer and where it went."""
    return {
        "time_to_offer_after_agent_frees": ms([r["time_to_offer_ms"] / 1000 for r in rows]),
        "resolve_call": ms([r["resolve_call_ms"] / 1000 for r in rows]),
        "decided_after_agent_frees": ms([r["decided_after_ms"] / 1000 for r in rows]),
        "offer_after_decision": ms(
            [(r["time_to_offer_ms"] - r["decided_after_ms"]) / 1000 for r in rows]
        ),
        "queued_after_arrival": ms([r["queued_after_ms"] / 1000 for r in rows]),
    }


async def p1_behind_backlog(
    system: LocalSystem, backlog: int, samples: int, p1_path: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """An agent frees while `backlog` lower tickets wait: how fast is the waiting P1 offered?

    With `p1_path` (the processes a P1 offer passes through, by name), `samples` more are
    taken, alternating with the others, with those processes at real-time priority (`OWN_CPU`):
    the stand-in, on a machine every process shares, for the CPU a deployment gives them.
    """
    bootstrap = system.stack.kafka_bootstrap
    tickets, acks = TicketLog(bootstrap), Acknowledgements(bootstrap)
    await tickets.start()
    await acks.start()
    client = httpx.AsyncClient(timeout=30)
    try:
        ingest = Ingest.load()
        run = f"bk{uuid.uuid4().hex[:4]}"
        low = generate(backlog, run, seed=3, keep=ingest.below_p1, config=ingest.parser)
        published = time.perf_counter()
        await produce(bootstrap, low)
        queued_at = await tickets.wait_for([p.message_id for p in low], 900)
        waiting = {tickets.ticket_of[p.message_id] for p in low}
        priorities = Counter(tickets.first_routed[t][1] for t in waiting)
        if urgent := [
            tickets.first_routed[t] for t in waiting if tickets.first_routed[t][1] == "P1"
        ]:
            raise RuntimeError(f"the backlog holds P1 tickets (its sample would wait): {urgent}")

        # One agent, room for one chat: it takes the best waiting chat and is then busy.
        [agent] = add_agents(system.url("router"), 1, capacity={"chat": 1})
        await tickets.wait_until(lambda: agent in tickets.given_to, 60, "agent got no ticket")
        held = tickets.given_to[agent][0].ticket_id

        steps = "omniroute_router_step_seconds"
        steps_before = await histogram_buckets(system.url("router"), steps)
        refused = may_put_first(p1_path) if p1_path else None
        own = dict(p1_path or {}) if refused is None else {}
        rows: list[dict[str, Any]] = []
        for n in range(2 * samples if own else samples):
            cpu = OWN_CPU if own and n % 2 else SHARED  # alternating: the same backlog, notify
            posted = time.perf_counter()
            mid = await post_p1_chat(client, system.url("ingest"), n)
            queued = await tickets.wait_for([mid], 120)
            p1 = tickets.ticket_of[mid]
            if tickets.first_routed[p1][:2] != ("queued", "P1"):
                raise RuntimeError(f"sample {n}: the P1 chat was {tickets.first_routed[p1]}")
            outstanding = len(waiting - acks.done)
            with first_on_cpu(own) if cpu == OWN_CPU else contextlib.nullcontext():
                freed_at, freed = datetime.now(UTC), time.perf_counter()
                reply = await client.post(
                    f"{system.url('router')}/v1/tickets/{held}/resolve",
                    headers=AUTH,
                    json={"agent_id": agent},
                )
                answered = time.perf_counter()
                # Measured inside the window: whether the P1 path really ran real-time.
                on_realtime = all(realtime(pid) for pid in own.values()) if own else False
                if reply.status_code != 202:
                    raise RuntimeError(
                        f"sample {n}: resolve refused: {reply.status_code} {reply.text}"
                    )
                try:
                    g = await tickets.offer_of(p1, 60)
                except TimeoutError:
                    instead = [g.ticket_id for g in tickets.given_to[agent] if g.arrived >= freed]
                    raise TimeoutError(
                        f"sample {n}: P1 {p1} not offered within 60 s; "
                        f"the agent was given {instead}"
                    ) from None
            if g.agent_id != agent:
                raise RuntimeError(f"sample {n}: P1 {p1} went to {g.agent_id}, not {agent}")
            rows.append(
                {
                    "time_to_offer_ms": round((g.arrived - freed) * 1000, 2),
                    "resolve_call_ms": round((answered - freed) * 1000, 2),
                    "decided_after_ms": round((g.decided_at - freed_at).total_seconds() * 1000, 2),
                    # Arrival to queued: not the figure, but where an engine outage shows.
                    "queued_after_ms": round((queued - posted) * 1000, 2),
                    "acknowledgements_outstanding": outstanding,
                    "after_backlog_queued_s": round(freed - queued_at, 1),
                    "cpu": cpu,
                    "p1_path_realtime": on_realtime,
                }
            )
            held = p1
        steps_after = await histogram_buckets(system.url("router"), steps)
        outstanding_left = [r["acknowledgements_outstanding"] for r in rows]
        shared = [r for r in rows if r["cpu"] == SHARED]
        own_rows = [r for r in rows if r["cpu"] == OWN_CPU]
        return {
            "backlog": backlog,
            "backlog_priorities": dict(sorted(priorities.items())),
            "backlog_queued_after_s": round(queued_at - published, 1),
            **summary(shared),
            # The same, the P1 path at real-time priority (or why that could not be done).
            OWN_CPU: (
                {"processes": sorted(own), "policy": f"SCHED_FIFO {REALTIME}", **summary(own_rows)}
                if own
                else {"refused": refused or "not asked (--no-p1-own-cpu)"}
            ),
            "acknowledgements_outstanding": {
                "first": outstanding_left[0] if rows else 0,
                "last": outstanding_left[-1] if rows else 0,
                "min": min(outstanding_left, default=0),
            },
            # Every router step while sampling (the samples' and any other, both kinds), by phase.
            "router_step_phases": bucket_quantiles(steps_before, steps_after),
            "samples": rows,
            "note": "from the resolve API call to the P1's offer event on support.tickets, "
            "while notify sends the backlog's acknowledgements",
        }
    finally:
        await client.aclose()
        await acks.stop()
        await tickets.stop()
