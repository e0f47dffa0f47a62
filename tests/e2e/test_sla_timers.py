"""The sla service as its own process, driven straight through `support.tickets` with a
short policy (first response: 2 s, warning at 1.5 s): thresholds fire on time, once, in
order; a reply in time is `met` and never breached; waiting on the customer moves the
deadline by exactly the paused time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from omniroute.system import LocalSystem
from services.router.handlers import ticket_event
from shared.contracts.tickets import TicketEvent
from shared.embedded import EmbeddedStack
from shared.settings import REPO_POLICY_DIR
from shared.topics import SLA, TICKETS
from tests.support.waiting import await_until

pytestmark = pytest.mark.e2e
S = timedelta(seconds=1)
MS = timedelta(milliseconds=1)
FIRST_RESPONSE_S = 2.0


def short_policy_dir(path: Path, first_response_s: float) -> Path:
    """Every policy file, with an sla.yaml whose first response is due in seconds."""
    path.mkdir(parents=True, exist_ok=True)
    for f in REPO_POLICY_DIR.glob("*.yaml"):
        shutil.copy(f, path / f.name)
    targets = {
        p: {"first_response_s": first_response_s, "next_response_s": 60, "resolution_s": 3600}
        for p in ("P1", "P2", "P3", "P4")
    }
    (path / "sla.yaml").write_text(yaml.safe_dump({"warning_ratio": 0.75, "targets": targets}))
    return path


def sla_system(
    stack: EmbeddedStack, work: Path, name: str, first_response_s: float, **env: str
) -> LocalSystem:
    return LocalSystem(
        stack,
        log_dir=work / "logs",
        env_overrides={
            "OMNIROUTE_POLICY_DIR": str(short_policy_dir(work / "policy", first_response_s)),
            **env,
        },
        mongo_db=f"e2e_{name}",
    )


def lease_holder(url: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith("omniroute_sla_lease_holder "):
            return float(line.split()[1])
    return 0.0


@dataclass
class Seen:
    """One record on support.sla."""

    ce_id: str
    event: str
    data: dict[str, Any]
    partition: int
    offset: int
    timestamp: datetime

    @property
    def metric(self) -> str:
        return str(self.data["metric"])

    def at(self, name: str) -> datetime:
        return datetime.fromisoformat(self.data[name])


@dataclass
class Desk:
    """Writes ticket events to support.tickets and watches support.sla."""

    bootstrap: str
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    seen: list[Seen] = field(default_factory=list)
    seq: dict[str, int] = field(default_factory=dict)

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=0)
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50
        )
        await self.consumer.start()
        parts = [
            TopicPartition(SLA, p) for p in sorted(self.consumer.partitions_for_topic(SLA) or ())
        ]
        assert parts, "support.sla has no partitions"
        self.consumer.assign(parts)
        await self.consumer.seek_to_end(*parts)
        self.task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=100)
            for records in batch.values():
                for r in records:
                    headers = {k: v.decode() for k, v in r.headers or ()}
                    if not headers.get("ce_type", "").startswith("omniroute.sla."):
                        continue
                    data = json.loads(r.value)
                    if not str(data.get("ticket_id", "")).startswith(f"tkt_{self.run}"):
                        continue
                    self.seen.append(
                        Seen(
                            headers["ce_id"],
                            headers["ce_type"].split(".")[2],
                            data,
                            r.partition,
                            r.offset,
                            datetime.fromtimestamp(r.timestamp / 1000, UTC),
                        )
                    )

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.producer.stop()
        await self.consumer.stop()

    def ticket(self, name: str) -> str:
        return f"tkt_{self.run}_{name}"

    async def send(self, ticket: str, event: str, at: datetime, **over: Any) -> None:
        self.seq[ticket] = self.seq.get(ticket, 0) + 1
        fields: dict[str, Any] = {
            "ticket_id": ticket,
            "event": event,
            "priority": "P1",
            "category": "withdrawal",
            "channel": "chat",
            "customer_id": f"cus_{ticket}",
            "language": "en",
            "at": at,
            "state": "waiting_on_customer" if event == "waiting_on_customer" else "assigned",
            "opened_at": at,
            "sequence": self.seq[ticket],
        }
        fields.update(over)
        out = ticket_event(TicketEvent.model_validate(fields))
        await self.producer.send_and_wait(
            TICKETS,
            out.value,
            key=ticket.encode(),
            headers=[(k, v.encode()) for k, v in out.headers.items()],
        )

    async def open_many(self, tickets: list[str], at: datetime) -> None:
        """A burst of `opened` events, batched by the producer."""
        for ticket in tickets:
            self.seq[ticket] = 1
            out = ticket_event(
                TicketEvent(
                    ticket_id=ticket,
                    event="opened",
                    priority="P2",
                    category="deposit",
                    channel="email",
                    customer_id=f"cus_{ticket}",
                    language="zh",
                    at=at,
                    state="queued",
                    opened_at=at,
                    sequence=1,
                )
            )
            await self.producer.send(
                TICKETS,
                out.value,
                key=ticket.encode(),
                headers=[(k, v.encode()) for k, v in out.headers.items()],
            )
        await self.producer.flush()

    def of(self, ticket: str, event: str | None = None, metric: str | None = None) -> list[Seen]:
        return [
            s
            for s in self.seen
            if s.data["ticket_id"] == ticket
            and (event is None or s.event == event)
            and (metric is None or s.metric == metric)
        ]

    async def wait_for(self, ticket: str, event: str, metric: str, timeout_s: float = 20) -> Seen:
        async def found() -> Seen | None:
            got = self.of(ticket, event, metric)
            return got[0] if got else None

        return await await_until(found, timeout_s, f"{event} {metric} of {ticket}")


@pytest.fixture(scope="module")
def system(stack: EmbeddedStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSystem]:
    running = sla_system(
        stack, tmp_path_factory.mktemp("sla_timers"), "sla_timers", FIRST_RESPONSE_S
    )
    try:
        running.start(("sla",))
        running.wait_ready(timeout_s=60)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
async def desk(system: LocalSystem) -> AsyncIterator[Desk]:
    watching = Desk(system.stack.kafka_bootstrap)
    await watching.start()
    try:
        # Warm up: once a ticket's timers start, the engine holds the lease and consumes.
        warm = watching.ticket("warmup")
        await watching.send(warm, "opened", datetime.now(UTC))
        await watching.wait_for(warm, "started", "first_response", timeout_s=60)
        yield watching
    finally:
        await watching.stop()


async def test_warning_then_breach_once_each_on_time(desk: Desk) -> None:
    ticket = desk.ticket("late")
    opened_at = datetime.now(UTC)
    await desk.send(ticket, "opened", opened_at)
    breach = await desk.wait_for(ticket, "breached", "first_response")
    [warning] = desk.of(ticket, "warning", "first_response")
    # Deadlines are exact; each threshold left once, the warning first (same partition).
    assert warning.at("threshold_at") == opened_at + 1.5 * S
    assert breach.at("due_at") == breach.at("threshold_at") == opened_at + 2 * S
    assert (warning.partition, warning.offset) < (breach.partition, breach.offset)
    # ... and promptly: the engine sleeps until a threshold, not for a polling period.
    # (record timestamps are whole milliseconds)
    assert -MS <= warning.timestamp - warning.at("threshold_at") < 1 * S
    assert -MS <= breach.timestamp - breach.at("due_at") < 1 * S
    assert breach.data["priority"] == "P1" and breach.data["channel"] == "chat"
    assert 2.0 <= breach.data["elapsed_s"] < 3.0
    # The agent finally answers: met, late, with the time it took; nothing fires again.
    await desk.send(ticket, "agent_replied", opened_at + 2.5 * S, agent_id="a1")
    met = await desk.wait_for(ticket, "met", "first_response")
    assert met.data["achieved_s"] == 2.5 and met.data["breached"] is True
    assert met.data["agent_id"] == "a1"
    firing = [s for s in desk.of(ticket) if s.event in ("warning", "breached")]
    assert [(s.event, s.metric) for s in firing] == [
        ("warning", "first_response"),
        ("breached", "first_response"),
    ]


async def test_a_reply_in_time_is_met_and_never_breached(desk: Desk) -> None:
    answered, control = desk.ticket("answered"), desk.ticket("control")
    opened_at = datetime.now(UTC)
    await desk.send(answered, "opened", opened_at)
    await desk.send(answered, "agent_replied", opened_at + 0.3 * S, agent_id="a2")
    await desk.send(control, "opened", opened_at)
    met = await desk.wait_for(answered, "met", "first_response")
    assert met.data["achieved_s"] == 0.3 and met.data["breached"] is False
    # The control ticket, due at the same instant, breaching proves that moment passed.
    await desk.wait_for(control, "breached", "first_response")
    assert desk.of(answered, "warning") == [] and desk.of(answered, "breached") == []


async def test_waiting_on_the_customer_moves_the_deadline_by_the_paused_time(
    desk: Desk,
) -> None:
    waiting, control = desk.ticket("waiting"), desk.ticket("control2")
    opened_at = datetime.now(UTC)
    paused_at = opened_at + 0.5 * S
    await desk.send(waiting, "opened", opened_at)
    await desk.send(control, "opened", opened_at)
    await desk.send(waiting, "waiting_on_customer", paused_at)
    await desk.wait_for(waiting, "paused", "first_response")
    # The original deadline passes (the control breaches): the paused clock does not fire.
    await desk.wait_for(control, "breached", "first_response")
    assert desk.of(waiting, "warning") == [] and desk.of(waiting, "breached") == []
    # The customer writes: the clock runs on; the deadline moved by exactly the pause.
    resumed_at = datetime.now(UTC)
    await desk.send(waiting, "customer_replied", resumed_at)
    breach = await desk.wait_for(waiting, "breached", "first_response")
    [warning] = desk.of(waiting, "warning", "first_response")
    paused_for = resumed_at - paused_at
    assert breach.at("due_at") == opened_at + 2 * S + paused_for
    assert warning.at("threshold_at") == opened_at + 1.5 * S + paused_for
    [resumed] = desk.of(waiting, "resumed", "first_response")
    assert resumed.at("due_at") == breach.at("due_at")
    assert breach.timestamp >= breach.at("due_at") - MS
