"""SLA's engine: ticket events in, timer events out; due thresholds fired by its clock.

Both paths — a batch of ticket events, and a firing of due thresholds — take one step:
decide in memory, append one journal entry (the durable record of the step: the engines'
journal, shared/journal.py), hand the events to the producer, and only then let go. Input
offsets are committed after the batch's events are acknowledged. A failure anywhere marks
the state for reloading; the reload publishes whatever journaled events the topic lacks,
so every warning and breach leaves exactly once across crashes and lease takeovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.sla.deadlines import SlaState
from services.sla.erasure import SlaErasure
from services.sla.gcpause import GcPause
from services.sla.handlers import INPUTS, Step, sla_event
from services.sla.metrics import SlaMetrics
from services.sla.store import NEW, TIMERS, SlaStore, journaled, timer_from_doc
from shared.consume import Decoder
from shared.contracts.tickets import TicketEvent
from shared.events import OutboundEvent
from shared.journal import (
    Compactor,
    Entry,
    Journal,
    Marks,
    NoPublishedLog,
    Output,
    PublishedLog,
    advance,
    latest,
    republish,
)
from shared.lease import EngineLease

log = logging.getLogger(__name__)
# Items (timers + events) per journal entry: keeps each document far below 16 MB.
MAX_ENTRY_ITEMS = 2000
# Compaction writes only when no threshold falls due within this many seconds.
QUIET_S = 0.2
# Shortest pause between two firings (the clock otherwise wakes exactly at each threshold).
TICK_GAP_S = 0.003
# A full garbage collection may run when nothing falls due for this long.
GC_IDLE_S = 0.5


@dataclass
class SlaEngine:
    state: SlaState
    store: SlaStore
    output: Output
    metrics: SlaMetrics
    journal: Journal
    published: PublishedLog = field(default_factory=NoPublishedLog)
    lease: EngineLease | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    max_fire: int = 1000
    compact_interval_s: float = 0.25
    loaded: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    marks: Marks = field(default_factory=dict)
    gc: GcPause | None = None  # the service process sets one; tests share theirs
    compactor: Compactor = field(init=False)
    decoder: Decoder = field(init=False)
    erasure: SlaErasure = field(default_factory=SlaErasure)

    def __post_init__(self) -> None:
        self.decoder = Decoder("sla", INPUTS)
        self.compactor = Compactor(
            self._fold,
            self.journal,
            may_write=self._may_write,
            quiet=self._quiet,
            interval_s=self.compact_interval_s,
        )

    def _quiet(self) -> bool:
        """Nothing falls due in the next moment (compaction may use MongoDB)."""
        if self.lock.locked():
            return False
        until = self.seconds_until_due(self.clock())
        return until is None or until > QUIET_S

    async def _fold(self, changes: dict[str, list[Any]]) -> None:
        await self.store.fold(changes)
        for d in changes.get(TIMERS, ()):
            t = self.state.timers.get(d["_id"])
            if t is not None:
                t.stored = True

    def _may_write(self) -> bool:
        return self.lease is None or self.lease.valid()

    # -- loading and recovery ------------------------------------------------------

    async def load(self) -> None:
        """(Re)build the state: at start, on takeover, after any failed step."""
        async with self.lock:
            await self._load()

    async def _load(self) -> None:
        self.loaded = False
        await self.compactor.stop()
        state = SlaState(policy=self.state.policy, dedupe_window_s=self.state.dedupe_window_s)
        await self.store.load(state)
        pending = await self.journal.pending()
        if pending:
            await self._recover(pending)
            for d in latest(pending).get(TIMERS, ()):  # newer than the folded timers
                state.add(timer_from_doc(d, stored=not d.get(NEW)))
        self.marks = await self.published.end_offsets()
        self.state = state
        for entry in pending:
            self.compactor.offer(entry)
            self.compactor.mark_published(entry.entry_id)
        self.compactor.start()
        if self.gc is not None:
            self.gc.freeze()
        self.loaded = True
        self.metrics.observe_state(self.state, self.compactor.backlog)
        self.wake.set()

    async def _recover(self, pending: list[Entry]) -> None:
        """Publish the journaled events the output topics do not hold yet."""
        sent = await republish(pending, self.journal, self.published, self.output)
        self.metrics.recovered.inc(sent)

    # -- one step ----------------------------------------------------------------------

    def _entries(self, step: Step) -> list[Entry]:
        """The step as journal entries, a ticket's changes never split between two."""
        entries: list[Entry] = []
        timers: list[Any] = []
        events: list[OutboundEvent] = []

        def close() -> None:
            nonlocal timers, events
            if timers or events:
                changes = {TIMERS: timers} if timers else {}
                entries.append(Entry(self.journal.next_id(), changes, events, dict(self.marks)))
            timers, events = [], []

        for ticket_id, (changed, evs) in step.tickets.items():
            if len(timers) + len(events) + len(changed) + len(evs) > MAX_ENTRY_ITEMS:
                close()
            seq = step.progress.get(ticket_id, 0)
            timers += [journaled(t, seq) for t in changed.values()]
            events += evs
        events += step.other
        close()
        return entries

    async def _commit(self, step: Step) -> list[tuple[Entry, list[asyncio.Future[Any]]]]:
        """Journal the step, then hand its events to the producer (under the lock)."""
        if self.lease is not None:
            self.lease.check()  # a replica that lost its lease must not write
        sent = []
        for entry in self._entries(step):
            await self.journal.append(entry)
            self.compactor.offer(entry)
            sent.append((entry, await self.output.send(entry.events)))
        return sent

    async def _acknowledged(self, sent: list[tuple[Entry, list[asyncio.Future[Any]]]]) -> None:
        """Wait for Kafka (outside the lock); then the entries may be compacted."""
        try:
            for entry, futures in sent:
                advance(self.marks, await asyncio.gather(*futures))
                self.compactor.mark_published(entry.entry_id)
        except BaseException:
            self.loaded = False  # the reload publishes what did not arrive
            raise

    async def process(self, records: Sequence[Any]) -> int:
        async with self.lock:
            if not self.loaded:
                await self._load()
            try:
                step = self._apply(records)
                step.other += await self.erasure.finish(self.state, step, self.clock())
                sent = await self._commit(step) if step else []
                if step.reload:
                    # Reload from what is journaled, once Kafka has the step's events (so
                    # the reload does not send them again).
                    await self._acknowledged(sent)
                    sent = []
                    self.loaded = False
            except BaseException:
                # Memory may be ahead of MongoDB: reload before the redelivered batch.
                self.loaded = False
                raise
            self.wake.set()  # the clock recomputes its next wake-up
        await self._acknowledged(sent)
        self.metrics.observe(step.decided)
        self.metrics.observe_state(self.state, self.compactor.backlog)
        return len(step.events)

    def _apply(self, records: Sequence[Any]) -> Step:
        """The step for a batch of ticket events.

        Poison, each dead-lettered with its reason: a record without `ce_type` or `ce_id`,
        a type that is not a ticket event, data that fails the ticket event model, and an
        event the decision raises on (a time at the end of the calendar overflows the
        deadline). A decision that raises may have changed timers halfway: the step marks
        the state for reloading once it is journaled.
        """
        now = self.clock()
        step = Step()
        batch = self.decoder.decode(records, now)
        step.other += batch.dead
        for item in batch.events:
            ev = item.event
            if not isinstance(ev, TicketEvent):  # erasures and holds: at the batch's end
                self.erasure.note(ev)
                continue
            try:
                out, ids = self.state.on_ticket(ev, now)
            except Exception as exc:
                log.exception("decision failed", extra={"ticket_id": ev.ticket_id})
                step.reload = True
                detail = type(exc).__name__
                step.other.append(
                    self.decoder.dead("unprocessable ticket event", item.record, now, detail)
                )
                continue
            if ids or out:
                step.progress[ev.ticket_id] = self.state.applied_seq.get(ev.ticket_id, ev.sequence)
                step.add(
                    ev.ticket_id,
                    (self.state.timers[i] for i in ids),
                    (sla_event(e) for e in out),
                )
                step.decided += out
        self.state.evict(now)
        return step

    async def tick(self) -> int:
        """Fire what is due: journal the fired flags, then publish. Returns events fired."""
        async with self.lock:
            if not self.loaded:
                await self._load()
            now = self.clock()
            try:
                fired, _ = self.state.fire_due(now, limit=self.max_fire)
                if not fired:
                    return 0
                step = Step()
                for e in fired:
                    step.add(e.ticket_id, (self.state.timers[e.timer_id],), (sla_event(e),))
                sent = await self._commit(step)
            except BaseException:
                self.loaded = False  # fired in memory only: reload and fire again
                raise
            left = self.clock()
            armed = {e.timer_id: self.state.timers[e.timer_id].armed_at for e in fired}
        self.metrics.observe_firing(fired, left, armed)
        await self._acknowledged(sent)
        self.metrics.observe_state(self.state, self.compactor.backlog)
        return len(fired)

    def seconds_until_due(self, now: datetime) -> float | None:
        due = self.state.next_due() if self.loaded else None
        return None if due is None else max(0.0, (due - now).total_seconds())

    async def run_clock(self, active: Callable[[], bool], idle_s: float) -> None:
        """Fire thresholds as they fall due; sleep until the next one (or a change).

        Firings at least `TICK_GAP_S` apart: thresholds due within a few milliseconds of
        each other leave in one journal entry instead of one entry each."""
        while True:
            self.wake.clear()
            delay = idle_s
            if active():
                try:
                    fired = await self.tick()
                except Exception:
                    log.exception("firing due timers failed; reloading")
                    await asyncio.sleep(min(1.0, idle_s))
                    continue
                if fired >= self.max_fire:
                    continue  # more are due right now
                until = self.seconds_until_due(self.clock())
                if until is not None:
                    delay = min(delay, max(until, TICK_GAP_S if fired else 0.0))
                if self.gc is not None and (until is None or until > GC_IDLE_S):
                    self.gc.maintain()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), delay)
