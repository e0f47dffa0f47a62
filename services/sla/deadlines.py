"""SLA deadlines: timers started, paused, met and fired by ticket events. No I/O here.

A timer counts business time (calendar time, 24/7, unless its policy names a calendar):
`banked_us` is what it counted before `running_since`; while running its deadline is
`running_since + (target - banked)` in business time. Pausing banks the time counted so
far; resuming restarts the count, so the deadline moves by exactly the paused business
time. A priority (or tier) change re-targets a timer from what it has already counted.

Each threshold (warning, breach) fires at most once per timer: the flags travel with the
timer into MongoDB, and the engine stores them before the event leaves (handlers.py).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from services.sla.calendar import BusinessHours, add_business, business_between
from services.sla.policy import Resolved, SlaPolicy, Targets, load_policy
from shared.contracts.common import Category, Channel, Priority
from shared.contracts.sla import SlaEvent, SlaEventName, SlaMetric
from shared.contracts.tickets import TicketEvent
from shared.ids import stable_id

__all__ = [
    "Resolved",
    "SlaPolicy",
    "SlaState",
    "Targets",
    "Timer",
    "load_policy",
    "timer_id",
]

TimerState = Literal["running", "paused", "met", "cancelled"]
Threshold = Literal["warning", "breached"]
ACTIVE: frozenset[str] = frozenset({"running", "paused"})
# The customer wrote: paused clocks run again.
CUSTOMER_WROTE = frozenset({"customer_replied", "message_added", "reopened"})
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# (at, tiebreak, timer_id, threshold, timer version when pushed)
HeapEntry = tuple[datetime, int, str, Threshold, int]


def _us(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(slots=True)
class Timer:
    timer_id: str
    ticket_id: str
    metric: SlaMetric
    priority: Priority
    channel: Channel
    customer_id: str
    started_at: datetime
    due_at: datetime
    target_s: float
    warn_at: datetime | None = None
    customer_tier: str = "standard"
    category: Category | None = None
    policy: str = "default"
    calendar: str | None = None
    warning_ratio: float = 0.75
    banked_us: int = 0  # business microseconds counted before running_since
    running_since: datetime | None = None  # None unless running
    agent_id: str | None = None
    state: TimerState = "running"
    paused_at: datetime | None = None
    warned: bool = False
    breached: bool = False
    seq: int = 0  # ticket event sequence of the last change (redeliveries are skipped)
    finished_at: datetime | None = None
    armed_at: datetime | None = None  # when the current thresholds were computed
    # in memory only: heap bookkeeping, and whether sla_timers has a document for it yet
    version: int = 0
    heaped: int = 0
    stored: bool = False

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def target(self) -> timedelta:
        return timedelta(seconds=self.target_s)

    def threshold_at(self, kind: Threshold) -> datetime:
        if kind == "breached":
            return self.due_at
        return self.warn_at if self.warn_at is not None else self.due_at

    def snapshot(self) -> Timer:
        return replace(self)


def timer_id(ticket_id: str, metric: SlaMetric, started_by: int) -> str:
    """One timer per (ticket, metric, ticket event that started it): stable across replays."""
    return stable_id("tmr", ticket_id, metric, str(started_by), length=20)


@dataclass
class SlaState:
    policy: SlaPolicy
    # How long finished timers (and their tickets' applied sequence) stay in memory:
    # redelivered ticket events within this window are recognised and skipped.
    dedupe_window_s: float = 86_400.0
    timers: dict[str, Timer] = field(default_factory=dict)
    active: dict[str, dict[SlaMetric, Timer]] = field(default_factory=dict)
    applied_seq: dict[str, int] = field(default_factory=dict)
    heap: list[HeapEntry] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"running": 0, "paused": 0})
    _per_ticket: dict[str, int] = field(default_factory=dict)
    _finished: deque[tuple[datetime, str]] = field(default_factory=deque)
    _tiebreak: itertools.count[int] = field(default_factory=itertools.count)
    _live: int = 0  # valid heap entries; the rest of the heap is stale

    # -- bookkeeping -------------------------------------------------------------

    def hours(self, t: Timer) -> BusinessHours | None:
        return self.policy.hours(t.calendar) if t.calendar in self.policy.calendars else None

    def add(self, t: Timer) -> None:
        """Put a timer (loaded from storage) into memory, replacing one with the same id."""
        old = self.timers.get(t.timer_id)
        if old is not None:
            self._retire(old)
            self._unlink(old)
        t.heaped = 0  # a snapshot may carry its original's heap bookkeeping
        self.timers[t.timer_id] = t
        self._per_ticket[t.ticket_id] = self._per_ticket.get(t.ticket_id, 0) + 1
        self.applied_seq[t.ticket_id] = max(self.applied_seq.get(t.ticket_id, 0), t.seq)
        if t.active:
            self.active.setdefault(t.ticket_id, {})[t.metric] = t
            self.counts[t.state] += 1
            self._schedule(t)
        else:
            self._finished.append((t.finished_at or EPOCH, t.timer_id))

    def _unlink(self, t: Timer) -> None:
        del self.timers[t.timer_id]
        left = self._per_ticket.get(t.ticket_id, 1) - 1
        if left > 0:
            self._per_ticket[t.ticket_id] = left
        else:
            self._per_ticket.pop(t.ticket_id, None)
            self.applied_seq.pop(t.ticket_id, None)

    def _retire(self, t: Timer) -> None:
        """Take an active timer out of the active index and the heap."""
        self._unschedule(t)
        if t.active:
            self.counts[t.state] -= 1
            by_metric = self.active.get(t.ticket_id)
            if by_metric is not None and by_metric.get(t.metric) is t:
                del by_metric[t.metric]
                if not by_metric:
                    del self.active[t.ticket_id]

    def _set_state(self, t: Timer, state: TimerState) -> None:
        self.counts[t.state] -= 1
        t.state = state
        self.counts[state] += 1

    def _finish(self, t: Timer, state: TimerState, at: datetime, now: datetime) -> None:
        self._retire(t)
        t.state = state
        t.running_since = None
        t.finished_at = at
        self._finished.append((now, t.timer_id))

    def evict(self, now: datetime) -> int:
        """Forget timers finished longer ago than the dedupe window (and their tickets)."""
        horizon = now - timedelta(seconds=self.dedupe_window_s)
        evicted = 0
        while self._finished and self._finished[0][0] < horizon:
            _, tid = self._finished.popleft()
            t = self.timers.get(tid)
            if t is not None and not t.active:
                self._unlink(t)
                evicted += 1
        return evicted

    # -- the heap: two entries per running timer; stale entries are skipped and, when
    # they outnumber the live ones, dropped in one pass ---------------------------

    def _unschedule(self, t: Timer) -> None:
        self._live -= t.heaped
        t.heaped = 0
        t.version += 1

    def _schedule(self, t: Timer) -> None:
        self._unschedule(t)
        if t.state != "running":
            return
        if not t.warned:
            self._push(t, "warning")
        if not t.breached:
            self._push(t, "breached")
        self._live += t.heaped
        if len(self.heap) > 2 * self._live + 1024:
            self.heap = [e for e in self.heap if self._valid(e)]
            heapq.heapify(self.heap)

    def _push(self, t: Timer, kind: Threshold) -> None:
        entry = (t.threshold_at(kind), next(self._tiebreak), t.timer_id, kind, t.version)
        heapq.heappush(self.heap, entry)
        t.heaped += 1

    def _valid(self, e: HeapEntry) -> bool:
        t = self.timers.get(e[2])
        return (
            t is not None
            and t.state == "running"
            and t.version == e[4]
            and not (t.warned if e[3] == "warning" else t.breached)
        )

    def next_due(self) -> datetime | None:
        """When the earliest threshold falls due (stale heap entries dropped on the way)."""
        while self.heap and not self._valid(self.heap[0]):
            heapq.heappop(self.heap)
        return self.heap[0][0] if self.heap else None

    # -- time ----------------------------------------------------------------------

    def _arm(self, t: Timer, now: datetime) -> None:
        """Compute a timer's thresholds from what it has counted so far: counting on from
        `running_since`, or — paused — as if the customer answered at once."""
        start = t.running_since or t.paused_at
        assert start is not None
        hours = self.hours(t)
        banked = timedelta(microseconds=t.banked_us)
        t.due_at = add_business(hours, start, t.target - banked)
        t.warn_at = add_business(
            hours, start, timedelta(seconds=t.target_s * t.warning_ratio) - banked
        )
        t.armed_at = now

    def _bank(self, t: Timer, at: datetime) -> datetime:
        """Add the business time counted up to `at` to the bank; returns the (clamped) `at`."""
        assert t.running_since is not None
        at = max(at, t.running_since)
        t.banked_us += _us(business_between(self.hours(t), t.running_since, at))
        return at

    def elapsed_s(self, t: Timer, at: datetime) -> float:
        counted = timedelta(microseconds=t.banked_us)
        if t.state == "running" and t.running_since is not None and at > t.running_since:
            counted += business_between(self.hours(t), t.running_since, at)
        return counted.total_seconds()

    # -- events ----------------------------------------------------------------------

    def _event(
        self,
        t: Timer,
        name: SlaEventName,
        now: datetime,
        *,
        seq: int | None = None,
        at: datetime | None = None,
        threshold_at: datetime | None = None,
        achieved_s: float | None = None,
    ) -> SlaEvent:
        return SlaEvent(
            timer_id=t.timer_id,
            ticket_id=t.ticket_id,
            event=name,
            metric=t.metric,
            due_at=t.due_at,
            warn_at=t.warn_at,
            elapsed_s=max(0.0, self.elapsed_s(t, at or now)),
            target_s=t.target_s,
            priority=t.priority,
            channel=t.channel,
            agent_id=t.agent_id,
            customer_id=t.customer_id,
            customer_tier=t.customer_tier,
            policy=t.policy,
            calendar=t.calendar,
            at=now,
            threshold_at=threshold_at,
            achieved_s=achieved_s,
            breached=t.breached,
            ticket_sequence=seq,
        )

    def _resolve(self, ev: TicketEvent) -> Resolved:
        return self.policy.resolve(ev.priority, ev.channel, ev.customer_tier, ev.category)

    def _open(self, ev: TicketEvent, metric: SlaMetric, now: datetime) -> SlaEvent | None:
        if metric in self.active.get(ev.ticket_id, {}):
            return None
        r = self._resolve(ev)
        t = Timer(
            timer_id=timer_id(ev.ticket_id, metric, ev.sequence),
            ticket_id=ev.ticket_id,
            metric=metric,
            priority=ev.priority,
            channel=ev.channel,
            customer_id=ev.customer_id,
            customer_tier=ev.customer_tier,
            category=ev.category,
            policy=r.policy,
            calendar=r.calendar,
            warning_ratio=r.warning_ratio,
            started_at=ev.at,
            running_since=ev.at,
            due_at=ev.at,
            target_s=r.targets.of(metric),
            agent_id=ev.agent_id,
            seq=ev.sequence,
        )
        self._arm(t, now)
        self.add(t)
        return self._event(t, "started", now, seq=ev.sequence, at=ev.at)

    def _pause(self, t: Timer, at: datetime) -> None:
        t.paused_at = self._bank(t, at)
        t.running_since = None
        self._set_state(t, "paused")
        self._unschedule(t)

    def _resume(self, t: Timer, at: datetime, now: datetime) -> None:
        assert t.paused_at is not None
        t.running_since = max(at, t.paused_at)
        t.paused_at = None
        self._set_state(t, "running")
        self._arm(t, now)
        self._schedule(t)

    def _retarget(self, t: Timer, ev: TicketEvent, r: Resolved, now: datetime) -> None:
        if t.state == "running":
            t.running_since = self._bank(t, ev.at)  # count the old way up to the change
        t.priority, t.channel, t.customer_tier = ev.priority, ev.channel, ev.customer_tier
        t.category = ev.category
        t.policy, t.calendar, t.warning_ratio = r.policy, r.calendar, r.warning_ratio
        t.target_s = r.targets.of(t.metric)
        self._arm(t, now)
        if t.state == "running":
            self._schedule(t)

    def on_ticket(self, ev: TicketEvent, now: datetime) -> tuple[list[SlaEvent], set[str]]:
        """(SLA events, ids of timers changed) for one ticket event; `now` stamps the events."""
        if ev.sequence <= self.applied_seq.get(ev.ticket_id, 0):
            return [], set()
        out: list[SlaEvent] = []
        changed: set[str] = set()
        seq = ev.sequence
        current = list(self.active.get(ev.ticket_id, {}).values())
        for t in current:
            if t.agent_id != ev.agent_id:
                t.agent_id = ev.agent_id
                changed.add(t.timer_id)
            key = (ev.priority, ev.channel, ev.customer_tier, ev.category)
            if key != (t.priority, t.channel, t.customer_tier, t.category):
                before = (t.policy, t.calendar, t.warning_ratio, t.target_s)
                self._retarget(t, ev, self._resolve(ev), now)
                changed.add(t.timer_id)
                if before != (t.policy, t.calendar, t.warning_ratio, t.target_s):
                    out.append(self._event(t, "retargeted", now, seq=seq, at=ev.at))
        if ev.event in CUSTOMER_WROTE:
            for t in current:
                if t.state == "paused":
                    self._resume(t, ev.at, now)
                    out.append(self._event(t, "resumed", now, seq=seq, at=ev.at))
        opened: list[SlaEvent | None] = []
        if ev.event == "opened":
            opened += [self._open(ev, "first_response", now), self._open(ev, "resolution", now)]
        elif ev.event == "reopened":
            opened += [self._open(ev, "resolution", now), self._open(ev, "next_response", now)]
        elif ev.event == "agent_replied":
            responses: tuple[SlaMetric, ...] = ("first_response", "next_response")
            for metric in responses:
                waiting = self.active.get(ev.ticket_id, {}).get(metric)
                if waiting is not None:
                    out.append(self._meet(waiting, ev, now))
        elif ev.event in ("customer_replied", "message_added"):
            if "first_response" not in self.active.get(ev.ticket_id, {}):
                opened.append(self._open(ev, "next_response", now))
        elif ev.event == "waiting_on_customer":
            for t in current:
                if t.state == "running":
                    self._pause(t, ev.at)
                    out.append(self._event(t, "paused", now, seq=seq, at=ev.at))
        elif ev.event == "resolved":
            for t in list(self.active.get(ev.ticket_id, {}).values()):
                if t.metric == "resolution":
                    out.append(self._meet(t, ev, now))
                else:
                    self._finish(t, "cancelled", ev.at, now)
                    out.append(self._event(t, "cancelled", now, seq=seq, at=ev.at))
        out += [e for e in opened if e is not None]
        changed |= {e.timer_id for e in out}
        for tid in changed:
            self.timers[tid].seq = seq
        if changed:
            self.applied_seq[ev.ticket_id] = seq
        return out, changed

    def _meet(self, t: Timer, ev: TicketEvent, now: datetime) -> SlaEvent:
        at = max(ev.at, t.running_since) if t.running_since is not None else ev.at
        achieved = max(0.0, self.elapsed_s(t, at))
        if t.state == "running":
            self._bank(t, at)
        self._finish(t, "met", ev.at, now)
        return self._event(t, "met", now, seq=ev.sequence, at=at, achieved_s=achieved)

    def fire_due(self, now: datetime, limit: int | None = None) -> tuple[list[SlaEvent], set[str]]:
        """Warnings and breaches whose time has come, each at most once per timer."""
        out: list[SlaEvent] = []
        changed: set[str] = set()
        while self.heap and self.heap[0][0] <= now and (limit is None or len(out) < limit):
            at, _, tid, kind, version = heapq.heappop(self.heap)
            t = self.timers.get(tid)
            if t is None or t.version != version or t.state != "running":
                continue  # stale: the timer moved, paused or finished since
            if kind == "warning":
                if t.warned:
                    continue
                t.warned = True
            else:
                if t.breached:
                    continue
                t.breached = True
            t.heaped -= 1
            self._live -= 1
            out.append(self._event(t, kind, now, threshold_at=at))
            changed.add(tid)
        return out, changed
