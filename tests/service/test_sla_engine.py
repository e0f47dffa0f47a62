"""The SLA engine's steps with in-memory ports: journal first, then publish; recovery
publishes what a crash left unsent, once; compaction; the clock; metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from services.router.handlers import ticket_event
from services.sla.deadlines import SlaState, load_policy
from services.sla.engine import SlaEngine
from services.sla.metrics import SlaMetrics
from shared.events import OutboundEvent
from shared.journal import Marks, MemoryJournal
from shared.settings import REPO_POLICY_DIR
from tests.support.factories import T0
from tests.support.factories import ticket_event as make_ticket_event
from tests.support.fakes import FakeSlaStore, record_of
from tests.support.waiting import await_until

S = timedelta(seconds=1)


class Crash(RuntimeError):
    """The process dies here."""


@dataclass
class FakeOutput:
    sent: list[OutboundEvent] = field(default_factory=list)
    crash_after: int | None = None  # events accepted before the "crash"
    journal: MemoryJournal | None = None
    journaled_before_send: list[bool] = field(default_factory=list)

    async def send(self, events: Iterable[OutboundEvent]) -> list[asyncio.Future[Any]]:
        for e in events:
            if self.journal is not None:
                ids = {x.id for entry in self.journal.entries for x in entry.events}
                self.journaled_before_send.append(e.id in ids)
            if self.crash_after is not None and len(self.sent) >= self.crash_after:
                raise Crash("killed mid-publish")
            self.sent.append(e)
        return []

    def kinds(self) -> list[str]:
        return [e.type.split(".")[2] for e in self.sent]


@dataclass
class FakePublished:
    """The output topic as a new lease holder reads it."""

    on_topic: set[str] = field(default_factory=set)
    asked: list[Marks] = field(default_factory=list)

    async def end_offsets(self) -> Marks:
        return {("support.sla", 0): 7}

    async def ids_since(self, marks: Marks) -> set[str]:
        self.asked.append(marks)
        return set(self.on_topic)


@dataclass
class Node:
    """One sla process: its own memory, sharing the durable journal and store."""

    journal: MemoryJournal
    store: FakeSlaStore
    output: FakeOutput = field(default_factory=FakeOutput)
    published: FakePublished = field(default_factory=FakePublished)
    now: list[datetime] = field(default_factory=lambda: [T0])
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.engine = SlaEngine(
            state=SlaState(load_policy(REPO_POLICY_DIR / "sla.yaml")),
            store=self.store,
            output=self.output,
            metrics=SlaMetrics.create(self.registry),
            journal=self.journal,
            published=self.published,
            clock=lambda: self.now[0],
            compact_interval_s=3600,  # compaction only when a test asks for it
        )

    async def feed(self, *events: Any) -> int:
        return await self.engine.process([record_of(ticket_event(e)) for e in events])

    async def tick_at(self, seconds: float) -> int:
        self.now[0] = T0 + seconds * S
        return await self.engine.tick()

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


def opened(ticket: str = "tkt_1", **over: Any) -> Any:
    return make_ticket_event("opened", 1, ticket_id=ticket, priority="P1", **over)


@pytest.fixture
def durable() -> tuple[MemoryJournal, FakeSlaStore]:
    return MemoryJournal(), FakeSlaStore()


async def test_each_step_is_journaled_before_its_events_leave(
    durable: tuple[MemoryJournal, FakeSlaStore],
) -> None:
    journal, store = durable
    node = Node(journal, store, FakeOutput(journal=journal))
    await node.feed(opened())
    assert await node.tick_at(46) == 1
    assert node.output.kinds() == ["started", "started", "warning"]
    assert node.output.journaled_before_send == [True, True, True]
    # The warning's entry carries the fired flag and the mark to look for it from.
    last = journal.entries[-1]
    assert [t["warned"] for t in last.changes["sla_timers"]] == [True]
    assert last.marks == {("support.sla", 0): 7}


async def test_a_crash_mid_publish_is_finished_by_the_next_holder_without_duplicates(
    durable: tuple[MemoryJournal, FakeSlaStore],
) -> None:
    journal, store = durable
    first = Node(journal, store)
    await first.feed(opened("tkt_1"), opened("tkt_2"))
    # Both tickets' warnings are due; the process dies after handing over one of them.
    first.output.crash_after = len(first.output.sent) + 1
    with pytest.raises(Crash):
        await first.tick_at(50)
    warnings = [e for e in journal.entries[-1].events if e.type.endswith("warning.v1")]
    assert len(warnings) == 2
    on_topic = {e.id for e in first.output.sent}
    # The standby takes over: it reads the topic from the journal's marks and sends only
    # the warning that never left; nothing is fired twice afterwards.
    second = Node(journal, store, published=FakePublished(on_topic=on_topic))
    second.now[0] = T0 + 50 * S
    await second.engine.load()
    assert second.published.asked == [{("support.sla", 0): 7}]
    assert [e.id for e in second.output.sent] == [warnings[1].id]
    assert await second.tick_at(55) == 0
    assert await second.tick_at(61) == 2  # the breaches, once each
    everything = [e.id for e in first.output.sent + second.output.sent]
    assert len(everything) == len(set(everything))


async def test_a_takeover_reads_the_topic_only_past_the_published_watermark(
    durable: tuple[MemoryJournal, FakeSlaStore],
) -> None:
    journal, store = durable
    first = Node(journal, store)
    await first.feed(opened("tkt_1"))
    # Everything so far is acknowledged and the watermark says so (the compactor writes it).
    await first.engine.compactor._store_watermark(force=True)
    assert journal.through == journal.entries[-1].entry_id
    first.engine.marks = {("support.sla", 0): 9}  # where the next entry's events land
    first.output.crash_after = len(first.output.sent)  # dies before the next events leave
    with pytest.raises(Crash):
        await first.feed(opened("tkt_2"))
    second = Node(journal, store)
    await second.engine.load()
    # Only the entry past the watermark is looked up, from its own mark; its events are
    # sent, the acknowledged entry's are not sent again.
    assert second.published.asked == [{("support.sla", 0): 9}]
    assert {json.loads(e.value)["ticket_id"] for e in second.output.sent} == {"tkt_2"}


async def test_a_failed_batch_is_reloaded_and_its_redelivery_applied_once(
    durable: tuple[MemoryJournal, FakeSlaStore],
) -> None:
    journal, store = durable
    node = Node(journal, store, FakeOutput(crash_after=0))
    with pytest.raises(Crash):
        await node.feed(opened())
    # Same process, the batch redelivered (NACK): the reload publishes the journaled
    # events; the batch itself is recognised as applied.
    node.output.crash_after = None
    assert await node.feed(opened()) == 0
    assert node.output.kinds() == ["started", "started"]


async def test_compaction_folds_only_published_entries(
    durable: tuple[MemoryJournal, FakeSlaStore],
) -> None:
    journal, store = durable
    node = Node(journal, store)
    await node.feed(opened("tkt_1"))
    await node.feed(opened("tkt_2"))
    compactor = node.engine.compactor
    assert compactor.backlog == 2
    # The second entry is not acknowledged yet (as if its acks were still on the way).
    compactor.published.discard(journal.entries[1].entry_id)
    assert await compactor.compact() == 1
    assert {t.ticket_id for t in store.timers.values()} == {"tkt_1"}
    assert len(journal.entries) == 1
    compactor.mark_published(journal.entries[0].entry_id)
    assert await compactor.compact() == 1
    assert journal.entries == [] and len(store.timers) == 4
    assert store.progress == {"tkt_1": 1, "tkt_2": 1}


async def test_metrics_follow_the_timers_without_scanning_them(
    durable: tuple[MemoryJournal, FakeSlaStore],
) -> None:
    journal, store = durable
    node = Node(journal, store)
    await node.feed(opened("tkt_1"), opened("tkt_2", channel="email"))
    assert node.metric("omniroute_sla_timers", state="running") == 4
    await node.feed(
        make_ticket_event(
            "waiting_on_customer", 2, ticket_id="tkt_2", priority="P1", channel="email", at=T0 + S
        )
    )
    assert node.metric("omniroute_sla_timers", state="paused") == 2
    await node.tick_at(46)
    await node.tick_at(61)
    lag = "omniroute_sla_firing_lag_seconds_count"
    assert node.metric(lag, event="warning") == 1
    assert node.metric(lag, event="breached") == 1
    assert (
        node.metric(
            "omniroute_sla_breaches_total", metric="first_response", priority="P1", channel="chat"
        )
        == 1
    )
    await node.feed(
        make_ticket_event("agent_replied", 2, ticket_id="tkt_1", priority="P1", at=T0 + 70 * S)
    )
    count = "omniroute_sla_first_response_seconds_count"
    assert node.metric(count, priority="P1", channel="chat") == 1
    assert (
        node.metric("omniroute_sla_first_response_seconds_sum", priority="P1", channel="chat") == 70
    )


async def test_the_clock_wakes_for_a_threshold_a_batch_just_set(
    durable: tuple[MemoryJournal, FakeSlaStore],
) -> None:
    journal, store = durable
    node = Node(journal, store)
    node.engine.clock = lambda: datetime.now(UTC)
    await node.engine.load()
    clock = asyncio.create_task(node.engine.run_clock(lambda: True, idle_s=30.0))

    async def breached() -> bool:
        return "breached" in node.output.kinds()

    try:
        # Opened 59.8 s ago: the chat P1 breach falls due in 0.2 s. The idle clock would
        # sleep 30 s; the batch wakes it to sleep only until the threshold.
        at = datetime.now(UTC) - timedelta(seconds=59.8)
        await node.feed(opened(at=at, opened_at=at))
        await await_until(breached, 5, "breach fired")
        assert node.output.kinds() == ["started", "started", "warning", "breached"]
    finally:
        clock.cancel()
