"""`omniroute dev`, `omniroute demo` and `omniroute stack`: the system on this machine."""

from __future__ import annotations

import contextlib
import json
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from omniroute.samples import SAMPLES, chat_message, sample_stream
from omniroute.system import DEV_SECRET, LocalSystem
from services.ingest.http import SIGNATURE_HEADER, sign
from shared.auth import new_key
from shared.embedded import EmbeddedStack
from shared.scopes import Scope

console = Console()
TICKET_STATES = ("queued", "offered", "assigned", "waiting_on_customer", "resolved")


class Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop


# Development keys `omniroute dev` and `omniroute demo` make for each run: role -> scopes.
DEV_ROLES: dict[str, tuple[Scope, ...]] = {
    # The simulated agents' desk backend: works tickets for any agent.
    "dev-desk": ("tickets:read", "tickets:act", "tickets:act-as", "agents:read"),
    # Operations: agents' profiles, customers, incidents, erasures.
    "dev-ops": (
        "agents:read",
        "agents:admin",
        "customers:write",
        "erasure:write",
        "incidents:read",
        "incidents:write",
        "tickets:read",
    ),
}


@dataclass(frozen=True)
class DevCredentials:
    """This run's development keys: random, marked `development` (production refuses
    them), printed for the developer and gone with the run."""

    token: str  # OMNIROUTE_API_TOKEN: every scope
    tokens: dict[str, str] = field(default_factory=dict)  # role -> "<key id>.<secret>"
    entries: dict[str, dict[str, object]] = field(default_factory=dict)  # OMNIROUTE_API_KEYS

    @classmethod
    def generate(cls) -> DevCredentials:
        tokens, entries = {}, {}
        for role, scopes in DEV_ROLES.items():
            tokens[role], entry = new_key(role, role, scopes, development=True)
            entries[role] = entry.model_dump(mode="json")
        return cls(f"dev-{secrets.token_urlsafe(24)}", tokens, entries)

    def env(self) -> dict[str, str]:
        return {"OMNIROUTE_API_TOKEN": self.token, "OMNIROUTE_API_KEYS": json.dumps(self.entries)}

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def show(self, system: LocalSystem) -> None:
        # soft_wrap: a credential split over two lines cannot be copied.
        def say(text: str) -> None:
            console.print(text, soft_wrap=True, highlight=False)

        say("development credentials ([bold]this run only[/], refused in production):")
        for role, scopes in DEV_ROLES.items():
            say(f"  {role:9} Authorization: Bearer {self.tokens[role]}")
            say(f"  {'':9} [dim]{' '.join(scopes)}[/]")
        say(f"  {'all':9} Authorization: Bearer {self.token}")
        say(f"  {'':9} [dim]OMNIROUTE_API_TOKEN: every scope[/]")
        say(
            f"  e.g. curl -H 'Authorization: Bearer {self.tokens['dev-desk']}' "
            f"'{system.url('router')}/v1/tickets?state=queued'"
        )


@contextlib.contextmanager
def running_system(
    data_dir: Path | None,
    default_ports: bool = False,
    credentials: DevCredentials | None = None,
) -> Iterator[LocalSystem]:
    """Stack and services up; everything stopped on exit, Ctrl-C and SIGTERM included."""
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    stack = EmbeddedStack(data_dir=data_dir)
    system: LocalSystem | None = None
    try:
        stack.start()
        system = LocalSystem(
            stack,
            log_dir=stack.root / "logs",
            default_ports=default_ports,
            # No SMTP server or adapters here: deliveries are logged, not dead-lettered.
            env_overrides={
                "OMNIROUTE_NOTIFY_LOG_UNROUTED": "true",
                **(credentials.env() if credentials else {}),
            },
        )
        system.start()
        system.wait_ready(timeout_s=90)
        yield system
    finally:
        with contextlib.suppress(Stop, KeyboardInterrupt):
            if system is not None:
                system.stop()
            stack.stop()
        signal.signal(signal.SIGTERM, previous)


def post_chat(client: httpx.Client, system: LocalSystem, body: bytes) -> httpx.Response:
    return client.post(
        f"{system.url('ingest')}/v1/inbound/chat/generic",
        content=body,
        headers={SIGNATURE_HEADER: sign(DEV_SECRET, body), "content-type": "application/json"},
    )


def add_agents(
    client: httpx.Client, system: LocalSystem, count: int, creds: DevCredentials
) -> list[str]:
    names = ["Alice", "Bo", "Chen", "Dana", "Elif", "Fang", "Gita", "Hiro"]
    ids = []
    for i in range(count):
        aid = f"agent-{i + 1}"
        profile = {
            "name": names[i % len(names)],
            "skills": [],
            "languages": ["en", "zh"] if i % 2 == 0 else ["en"],
            "capacity": {"chat": 2, "email": 4, "social": 3, "phone": 1},
            "auto_accept": False,
            "security": i == 0,
        }
        router = system.url("router")
        client.put(f"{router}/v1/agents/{aid}", json=profile, headers=creds.auth("dev-ops"))
        client.post(
            f"{router}/v1/agents/{aid}/presence",
            json={"status": "online"},
            headers=creds.auth("dev-desk"),
        )
        ids.append(aid)
    return ids


def simulate_agents(
    client: httpx.Client, system: LocalSystem, db: Any, work_s: float, creds: DevCredentials
) -> None:
    """Accept offers at once; reply and resolve after `work_s` seconds of 'work'."""
    now = datetime.now(UTC)
    desk = creds.auth("dev-desk")
    for t in db.tickets.find({"state": {"$in": ["offered", "assigned"]}}).limit(50):
        base = f"{system.url('router')}/v1/tickets/{t['_id']}"
        body = {"agent_id": t["agent_id"]}
        if t["state"] == "offered":
            client.post(f"{base}/accept", json=body, headers=desk)
        elif (now - t["updated_at"]).total_seconds() > work_s:
            client.post(f"{base}/reply", json=body, headers=desk)
            client.post(f"{base}/resolve", json=body, headers=desk)


WAIT_CAUSES = {"acknowledgement": "acknowledged", "estimate_corrected": "corrected"}


def snapshot(db: Any) -> dict[str, Any]:
    states: dict[str, int] = {}
    for row in db.tickets.aggregate([{"$group": {"_id": "$state", "n": {"$sum": 1}}}]):
        states[row["_id"]] = row["n"]
    return {
        "states": states,
        "agents": list(db.agents.find({}, {"profile.name": 1, "presence": 1, "load": 1})),
        "recent": list(db.tickets.find({}).sort("updated_at", -1).limit(8)),
        "customers": db.customers.count_documents({}),
        "timers": db.sla_timers.count_documents({"state": "running"}),
        "notifications": db.notifications.count_documents({"cause": "acknowledgement"}),
        # What customers were told about their wait (notify's estimate), newest first.
        "waits": list(
            db.notifications.find(
                {"cause": {"$in": list(WAIT_CAUSES)}, "position": {"$ne": None}},
                {"ticket_id": 1, "cause": 1, "priority": 1, "position": 1, "expected_s": 1},
            )
            .sort("created_at", -1)
            .limit(6)
        ),
        "corrections": db.notifications.count_documents({"cause": "estimate_corrected"}),
    }


def render_view(snap: dict[str, Any], sent: int, started: float) -> Group:
    head = Table.grid(padding=(0, 3))
    head.add_row(
        f"[bold]omniroute dev[/]  up {time.monotonic() - started:4.0f}s",
        f"sent {sent}",
        f"customers {snap['customers']}",
        f"running SLA timers {snap['timers']}",
        f"acknowledgements {snap['notifications']}",
        "[dim]Ctrl-C stops everything[/]",
    )
    states = Table(title="tickets by state")
    for s in TICKET_STATES:
        states.add_column(s)
    states.add_row(*(str(snap["states"].get(s, 0)) for s in TICKET_STATES))
    agents = Table(title="agents")
    for col in ("agent", "name", "presence", "load"):
        agents.add_column(col)
    for a in snap["agents"]:
        load = ", ".join(f"{k} {v}" for k, v in sorted(a.get("load", {}).items()) if v)
        agents.add_row(a["_id"], a["profile"]["name"], a["presence"], load or "-")
    recent = Table(title="latest ticket changes")
    for col in ("ticket", "priority", "category", "lang", "state", "agent", "why"):
        recent.add_column(col)
    for t in snap["recent"]:
        recent.add_row(
            t["_id"],
            t["priority"],
            t["category"],
            t["language"],
            t["state"],
            t.get("agent_id") or "-",
            str(t.get("decision", {}).get("why", ""))[:40],
        )
    waits = Table(title=f"told about their wait (corrected estimates: {snap['corrections']})")
    for col in ("ticket", "priority", "told", "place", "expected reply"):
        waits.add_column(col)
    for n in snap["waits"]:
        expected = n.get("expected_s")
        waits.add_row(
            n["ticket_id"],
            n["priority"],
            WAIT_CAUSES[n["cause"]],
            str(n["position"]),
            f"in ~{expected / 60:.0f} min" if expected else "no estimate",
        )
    return Group(head, states, agents, recent, waits)


def run_dev(agents: int, rate: float, data_dir: str | None, live: bool) -> int:
    path = Path(data_dir) if data_dir else None
    console.print("[bold]omniroute dev[/]: Tansu, a SecantusDB per service, four services…")
    started = time.monotonic()
    creds = DevCredentials.generate()
    try:
        with (
            running_system(path, default_ports=True, credentials=creds) as system,
            httpx.Client(timeout=5) as client,
        ):
            db: Any = system.databases()  # db.tickets: the router's own database
            add_agents(client, system, agents, creds)
            console.print(
                f"ready in {time.monotonic() - started:.1f}s; services: "
                + ", ".join(f"{n} {s.url}" for n, s in system.services.items())
            )
            creds.show(system)
            stream = sample_stream(prefix=f"dev{int(time.time())}")
            sent, next_send, next_view = 0, time.monotonic(), 0.0
            with (
                Live(console=console, auto_refresh=False, transient=False)
                if live
                else contextlib.nullcontext() as view
            ):
                while True:
                    now = time.monotonic()
                    if rate > 0 and now >= next_send:
                        post_chat(client, system, next(stream))
                        sent += 1
                        next_send = now + 1 / rate
                    if now >= next_view:
                        simulate_agents(client, system, db, work_s=3, creds=creds)
                        snap = snapshot(db)
                        if view is not None:
                            view.update(render_view(snap, sent, started), refresh=True)
                        else:
                            console.print(json.dumps({"sent": sent, **snap["states"]}))
                        next_view = now + (0.5 if live else 5)
                    time.sleep(0.05)
    except (KeyboardInterrupt, Stop):
        console.print("stopped: no process left running")
    return 0


def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(what)


def run_demo(data_dir: str | None) -> int:
    """A short scripted scenario: one agent, four messages (one sent twice), a summary."""
    started = time.monotonic()
    path = Path(data_dir) if data_dir else None
    creds = DevCredentials.generate()
    try:
        with (
            running_system(path, credentials=creds) as system,
            httpx.Client(timeout=5) as client,
        ):
            db: Any = system.databases()  # db.tickets: the router's own database
            add_agents(client, system, 1, creds)
            wait_for(lambda: db.agents.count_documents({"presence": "online"}) == 1, 20, "agent")
            script = [SAMPLES[5], SAMPLES[1], SAMPLES[2], SAMPLES[4]]
            bodies = [
                chat_message(
                    f"demo-s{i}",
                    f"demo-m{i}",
                    text,
                    locale="zh-CN" if lang == "zh" else "en-US",
                    visitor_id=f"demo-v{i}",
                )
                for i, (lang, text) in enumerate(script)
            ]
            for body in [*bodies, bodies[1]]:  # the last one is a webhook retry
                post_chat(client, system, body)
            wait_for(lambda: db.tickets.count_documents({}) == len(bodies), 30, "tickets")
            wait_for(
                lambda: (
                    db.notifications.count_documents({"cause": "acknowledgement"}) == len(bodies)
                ),
                30,
                "acks",
            )
            # The agent works the P1: accept, reply (SLA met), resolve; the queue drains.
            p1 = db.tickets.find_one({"priority": "P1"})
            base = f"{system.url('router')}/v1/tickets/{p1['_id']}"
            for action in ("accept", "reply", "resolve"):
                client.post(
                    f"{base}/{action}", json={"agent_id": "agent-1"}, headers=creds.auth("dev-desk")
                )
            wait_for(lambda: db.tickets.count_documents({"state": "queued"}) < 2, 30, "drain")
            wait_for(lambda: db.sla_timers.count_documents({"state": "met"}) >= 2, 30, "met")
            table = Table(title=f"omniroute demo ({time.monotonic() - started:.1f}s)")
            for col in ("ticket", "priority", "category", "language", "state", "agent", "why"):
                table.add_column(col, no_wrap=True, overflow="ellipsis")
            for t in db.tickets.find({}).sort([("priority", 1), ("opened_at", 1)]):
                table.add_row(
                    t["_id"],
                    t["priority"],
                    t["category"],
                    t["language"],
                    t["state"],
                    t.get("agent_id") or "-",
                    t["decision"].get("why", ""),
                )
            console.print(table)
            console.print(
                f"{len(bodies) + 1} webhooks (one retry) → {db.tickets.count_documents({})} "
                f"tickets, {db.sla_timers.count_documents({})} SLA timers "
                f"({db.sla_timers.count_documents({'state': 'met'})} met), "
                f"{db.notifications.count_documents({'cause': 'acknowledgement'})} acknowledgements"
            )
    except (KeyboardInterrupt, Stop):
        return 130
    return 0


def run_stack() -> int:
    try:
        with EmbeddedStack() as stack:
            console.print(f"export OMNIROUTE_KAFKA_BOOTSTRAP='{stack.kafka_bootstrap}'")
            console.print("# and in each service's shell, its own store:")
            for store in stack.stores:
                console.print(
                    f"#   {store}: export OMNIROUTE_MONGO_URI='{stack.mongo_uri(store)}'"
                    f" OMNIROUTE_MONGO_DB='omniroute_{store}'",
                    soft_wrap=True,
                    highlight=False,
                )
            console.print("[dim]Ctrl-C stops the broker and the stores[/]")
            while True:
                time.sleep(1)
    except KeyboardInterrupt:
        return 0
