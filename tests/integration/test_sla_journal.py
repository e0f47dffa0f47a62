"""The engines' journal, the SLA timer store and the output-topic reader on real SecantusDB
and Tansu, and a crash mid-publish recovered by a second engine without a duplicate on the
topic."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from services.router.handlers import ticket_event
from services.sla.deadlines import SlaState, Timer, load_policy
from services.sla.engine import SlaEngine
from services.sla.metrics import SlaMetrics
from services.sla.store import JOURNAL, TIMERS, MongoSlaStore, journaled, timer_doc
from shared.embedded import EmbeddedStack
from shared.events import OutboundEvent, header
from shared.journal import PART_ITEMS, Entry, KafkaPublishedLog, MongoJournal, ProducerOutput
from shared.settings import REPO_POLICY_DIR
from shared.topics import DEADLETTER, SLA
from tests.support.factories import T0
from tests.support.factories import ticket_event as make_ticket_event
from tests.support.fakes import record_of
from tests.support.kafka import read_all

pytestmark = pytest.mark.integration
S = timedelta(seconds=1)


def timer(timer_id: str, **over: Any) -> Timer:
    fields: dict[str, Any] = {
        "timer_id": timer_id,
        "ticket_id": f"tkt_{timer_id}",
        "metric": "first_response",
        "priority": "P1",
        "channel": "chat",
        "customer_id": "cus_1",
        "started_at": T0,
        "due_at": T0 + 60 * S,
        "warn_at": T0 + 45 * S,
        "target_s": 60.0,
        "running_since": T0,
        "seq": 1,
    }
    fields.update(over)
    return Timer(**fields)


def event(n: int) -> OutboundEvent:
    return OutboundEvent(
        SLA, f"tkt_{n}", b'{"n": %d}' % n, {"ce_id": f"evt_{uuid.uuid4().hex}", "ce_type": "x"}
    )


async def test_journal_entries_round_trip_in_order(sla_db: Any) -> None:
    journal = MongoJournal(sla_db, f"test_{uuid.uuid4().hex[:6]}")
    first = Entry(
        journal.next_id(),
        {TIMERS: [journaled(timer("a", warned=True), 3)]},
        [event(1), event(2)],
        {(SLA, 0): 5, (SLA, 1): 9, (DEADLETTER, 0): 0},
    )
    second = Entry(journal.next_id(), {TIMERS: [timer_doc(timer("b"))]}, [event(3)], {(SLA, 0): 7})
    # A large step is stored in parts, and read back whole.
    big = Entry(
        journal.next_id(),
        {"docs": [{"_id": i} for i in range(PART_ITEMS + 10)]},
        [event(n) for n in range(4, 14)],
    )
    await journal.append(second)
    await journal.append(first)
    await journal.append(big)
    assert big.parts == 2
    pending = await journal.pending()
    assert [e.entry_id for e in pending] == [first.entry_id, second.entry_id, big.entry_id]
    got = pending[0]
    assert [(e.id, e.value, e.key) for e in got.events] == [
        (e.id, e.value, e.key) for e in first.events
    ]
    assert got.marks == first.marks
    [a] = got.changes[TIMERS]
    assert a["warned"] and a["due_at"] == T0 + 60 * S and a["seq"] == 3
    assert a["_new"]  # never stored: folding inserts it
    assert [d["_id"] for d in pending[2].changes["docs"]] == list(range(PART_ITEMS + 10))
    assert [e.id for e in pending[2].events] == [e.id for e in big.events]
    # A new journal object (a new process) numbers after what it found.
    again = MongoJournal(sla_db, journal.entries.name.removesuffix("_journal"))
    await again.pending()
    assert again.next_id() > big.entry_id
    await journal.discard([pending[0], pending[2]])
    assert [e.entry_id for e in await journal.pending()] == [second.entry_id]
    # The published watermark.
    assert await journal.published_through() == 0
    await journal.set_published_through(second.entry_id)
    assert await again.published_through() == second.entry_id


async def test_a_part_written_entry_is_dropped(sla_db: Any) -> None:
    """Died while appending a large step: none of it counts (its inputs come again)."""
    journal = MongoJournal(sla_db, f"test_{uuid.uuid4().hex[:6]}")
    big = Entry(journal.next_id(), {"docs": [{"_id": i} for i in range(PART_ITEMS * 2)]}, [])
    await journal.append(big)
    await journal.entries.delete_one({"part": 1})
    assert await journal.pending() == []
    assert await journal.entries.count_documents({}) == 0


async def test_timer_store_inserts_then_replaces_and_loads_what_matters(sla_db: Any) -> None:
    store = MongoSlaStore(sla_db)
    await store.ensure_indexes()
    now = datetime.now(UTC)
    old = timer("old", state="met", finished_at=now - 3 * 86400 * S)
    await store.fold({TIMERS: [journaled(timer("run"), 0), journaled(old, 0)]})
    # Folded again as if never stored (a journal replay): the insert falls back to replace.
    await store.fold({TIMERS: [journaled(timer("run", warned=True), 4)]})
    recent = timer("done", state="met", finished_at=now - 60 * S, running_since=None, seq=2)
    await store.fold({TIMERS: [journaled(recent, 0)]})
    assert await sla_db.sla_timers.count_documents({"_new": {"$exists": True}}) == 0
    # A timer document from before timers banked their time (paused, 24/7).
    await sla_db.sla_timers.insert_one(
        {
            "_id": "legacy",
            "ticket_id": "tkt_legacy",
            "metric": "resolution",
            "priority": "P2",
            "channel": "email",
            "customer_id": "cus_1",
            "started_at": T0,
            "due_at": T0 + 1000 * S,
            "target_s": 900.0,
            "state": "paused",
            "paused_at": T0 + 400 * S,
            "warned": False,
            "breached": False,
        }
    )
    state = SlaState(load_policy(REPO_POLICY_DIR / "sla.yaml"), dedupe_window_s=86400)
    await store.load(state)
    assert sorted(state.timers) == ["done", "legacy", "run"]  # not the long-finished one
    assert state.timers["run"].warned and state.timers["run"].seq == 4
    assert state.timers["run"].stored
    assert state.applied_seq == {"tkt_run": 4, "tkt_done": 2, "tkt_legacy": 0}
    legacy = state.timers["legacy"]
    assert legacy.banked_us == 300 * 10**6  # 900 s target, 600 s left when paused
    assert state.counts == {"running": 1, "paused": 1}


@pytest.fixture(scope="module")
def quiet_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    # Its own broker: on the session's busy topics this check has missed the tail of the
    # last batch (Tansu's end offsets); a miss costs a re-publish with the same ce_id,
    # never a lost event. Known limitation, see the closing note of issue 5.
    with EmbeddedStack(data_dir=tmp_path_factory.mktemp("quiet")) as running:
        yield running


async def test_the_published_log_finds_what_was_sent_after_the_marks(
    quiet_stack: EmbeddedStack,
) -> None:
    stack = quiet_stack
    log = KafkaPublishedLog(stack.kafka_bootstrap, (SLA, DEADLETTER))
    output = ProducerOutput({"bootstrap_servers": stack.kafka_bootstrap, "acks": "all"})
    await output.start()
    try:
        before = [event(n) for n in range(3)]
        await asyncio.gather(*await output.send(before))
        marks = await log.end_offsets()
        assert {(t, p) for t, p in marks} >= {(SLA, 0), (SLA, 1), (DEADLETTER, 0)}
        after = [event(n) for n in range(3, 8)]
        await asyncio.gather(*await output.send(after))
        # Everything sent after the marks is found. (Tansu reports a partition's end as its
        # last batch's first offset + 1, so a little from before may come along: the
        # marks stay lower bounds, which is all recovery needs.)
        found = await log.ids_since(marks)
        assert {e.id for e in after} <= found <= {e.id for e in before + after}
    finally:
        await output.stop()


@dataclass
class CrashingOutput:
    """The real producer, but the process "dies" after handing over `crash_after` events."""

    real: ProducerOutput
    crash_after: int | None = None
    handed: int = 0
    ids: list[str] = field(default_factory=list)

    async def send(self, events: Iterable[OutboundEvent]) -> list[asyncio.Future[Any]]:
        futures: list[asyncio.Future[Any]] = []
        for e in events:
            if self.crash_after is not None and self.handed >= self.crash_after:
                await asyncio.gather(*futures)  # what left before the crash did arrive
                raise RuntimeError("killed")
            futures += await self.real.send([e])
            self.handed += 1
            self.ids.append(e.id)
        return futures


async def test_an_engine_killed_mid_publish_is_finished_by_the_next_without_duplicates(
    stack: EmbeddedStack, sla_db: Any
) -> None:
    policy = load_policy(REPO_POLICY_DIR / "sla.yaml")
    output = ProducerOutput({"bootstrap_servers": stack.kafka_bootstrap, "acks": "all"})
    await output.start()
    run = uuid.uuid4().hex[:8]
    tickets = [f"tkt_{run}_{i}" for i in range(6)]

    registry = CollectorRegistry()

    def engine(out: Any, now: datetime, registry: CollectorRegistry) -> SlaEngine:
        return SlaEngine(
            state=SlaState(policy),
            store=MongoSlaStore(sla_db),
            output=out,
            metrics=SlaMetrics.create(registry),
            journal=MongoJournal(sla_db, JOURNAL),
            published=KafkaPublishedLog(stack.kafka_bootstrap, (SLA, DEADLETTER)),
            clock=lambda: now,
        )

    try:
        start = datetime.now(UTC)
        first_out = CrashingOutput(output)
        first = engine(first_out, start + 50 * S, CollectorRegistry())
        await first.load()
        opened = [
            make_ticket_event("opened", 1, ticket_id=t, priority="P1", at=start, opened_at=start)
            for t in tickets
        ]
        await first.process([record_of(ticket_event(e)) for e in opened])
        # Six warnings are due; the process dies after handing over two of them.
        first_out.crash_after = first_out.handed + 2
        with pytest.raises(RuntimeError, match="killed"):
            await first.tick()
        await first.compactor.stop()

        second = engine(output, start + 61 * S, registry)
        await second.load()  # publishes the four warnings that never left
        assert await second.tick() == 6  # the breaches; no warning again
        records = [
            r
            for r in await read_all(stack.kafka_bootstrap, [SLA])
            if r.key is not None and r.key.decode() in tickets
        ]
        ids = [header(r.headers, "ce_id") for r in records]
        kinds = [header(r.headers, "ce_type") for r in records]
        assert len(ids) == len(set(ids)) == 6 * 4  # 2 started, 1 warning, 1 breach each
        assert kinds.count("omniroute.sla.warning.v1") == 6
        assert kinds.count("omniroute.sla.breached.v1") == 6
        assert registry.get_sample_value("omniroute_sla_recovered_events_total") == 4
        await second.compactor.stop()
    finally:
        await output.stop()
