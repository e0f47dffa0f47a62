"""SLA deadlines: timers started, paused, met and fired by ticket events. No I/O here.

Times are calendar seconds (crypto support is 24/7); a paused timer's deadline moves by
exactly the time it spent paused.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.common import Channel, Priority
from shared.contracts.sla import SlaEvent, SlaEventName, SlaMetric
from shared.contracts.tickets import TicketEvent
from shared.ids import stable_id


class Targets(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    first_response_s: float = Field(gt=0)
    next_response_s: float = Field(gt=0)
    resolution_s: float = Field(gt=0)

    def of(self, metric: SlaMetric) -> float:
        return float(getattr(self, f"{metric}_s"))


class SlaPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    warning_ratio: float = Field(default=0.75, gt=0, lt=1)
    targets: dict[Priority, Targets]
    channel_overrides: dict[Channel, dict[Priority, Targets]] = Field(default_factory=dict)

    def target(self, priority: Priority, channel: Channel, metric: SlaMetric) -> float:
        refined = self.channel_overrides.get(channel, {}).get(priority)
        return (refined or self.targets[priority]).of(metric)


def load_policy(path: Path) -> SlaPolicy:
    return SlaPolicy.model_validate(yaml.safe_load(path.read_text("utf-8")))


@dataclass
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
    agent_id: str | None = None
    state: str = "running"  # running | paused | met | cancelled
    paused_at: datetime | None = None
    warned: bool = False
    breached: bool = False

    def warn_at(self, ratio: float) -> datetime:
        return self.due_at - timedelta(seconds=self.target_s * (1 - ratio))

    def elapsed_s(self, now: datetime) -> float:
        end = self.paused_at if self.paused_at else now
        remaining = (self.due_at - end).total_seconds()
        return max(0.0, self.target_s - remaining)


def timer_id(ticket_id: str, metric: SlaMetric, cycle: int) -> str:
    return stable_id("tmr", ticket_id, metric, str(cycle), length=20)


@dataclass
class SlaState:
    policy: SlaPolicy
    timers: dict[str, Timer] = field(default_factory=dict)
    by_ticket: dict[str, list[str]] = field(default_factory=dict)
    cycles: dict[tuple[str, str], int] = field(default_factory=dict)
    # Last ticket event sequence applied per ticket: redeliveries are recognised and skipped.
    applied_seq: dict[str, int] = field(default_factory=dict)
    heap: list[tuple[datetime, str, str]] = field(default_factory=list)

    def add(self, t: Timer) -> None:
        self.timers[t.timer_id] = t
        ids = self.by_ticket.setdefault(t.ticket_id, [])
        if t.timer_id not in ids:
            ids.append(t.timer_id)
        self.schedule(t)

    def schedule(self, t: Timer) -> None:
        if t.state != "running":
            return
        if not t.warned:
            heapq.heappush(self.heap, (t.warn_at(self.policy.warning_ratio), t.timer_id, "warning"))
        if not t.breached:
            heapq.heappush(self.heap, (t.due_at, t.timer_id, "breached"))

    def _event(self, t: Timer, name: SlaEventName, now: datetime) -> SlaEvent:
        return SlaEvent(
            timer_id=t.timer_id,
            ticket_id=t.ticket_id,
            event=name,
            metric=t.metric,
            due_at=t.due_at,
            elapsed_s=t.elapsed_s(now),
            target_s=t.target_s,
            priority=t.priority,
            channel=t.channel,
            agent_id=t.agent_id,
            customer_id=t.customer_id,
            at=now,
        )

    def _open(self, ev: TicketEvent, metric: SlaMetric, now: datetime) -> list[SlaEvent]:
        key = (ev.ticket_id, metric)
        if any(
            self.timers[i].metric == metric and self.timers[i].state in ("running", "paused")
            for i in self.by_ticket.get(ev.ticket_id, [])
        ):
            return []
        cycle = self.cycles.get(key, 0) + 1
        self.cycles[key] = cycle
        target = self.policy.target(ev.priority, ev.channel, metric)
        t = Timer(
            timer_id=timer_id(ev.ticket_id, metric, cycle),
            ticket_id=ev.ticket_id,
            metric=metric,
            priority=ev.priority,
            channel=ev.channel,
            customer_id=ev.customer_id,
            started_at=ev.at,
            due_at=ev.at + timedelta(seconds=target),
            target_s=target,
            agent_id=ev.agent_id,
        )
        self.add(t)
        return [self._event(t, "started", now)]

    def _running(self, ticket_id: str, metric: SlaMetric | None = None) -> list[Timer]:
        return [
            self.timers[i]
            for i in self.by_ticket.get(ticket_id, [])
            if self.timers[i].state in ("running", "paused")
            and (metric is None or self.timers[i].metric == metric)
        ]

    def _meet(self, ticket_id: str, metric: SlaMetric, now: datetime) -> list[SlaEvent]:
        out = []
        for t in self._running(ticket_id, metric):
            t.state = "met"
            out.append(self._event(t, "met", now))
        return out

    def on_ticket(self, ev: TicketEvent, now: datetime) -> tuple[list[SlaEvent], set[str]]:
        """(SLA events, ids of timers changed) for one ticket event."""
        if ev.sequence <= self.applied_seq.get(ev.ticket_id, 0):
            return [], set()
        self.applied_seq[ev.ticket_id] = ev.sequence
        before = {
            i: (self.timers[i].state, self.timers[i].due_at)
            for i in self.by_ticket.get(ev.ticket_id, [])
        }
        out: list[SlaEvent] = []
        for t in self._running(ev.ticket_id):
            t.agent_id = ev.agent_id or t.agent_id
        if ev.event in ("opened", "reopened"):
            if ev.event == "opened":
                out += self._open(ev, "first_response", now)
            out += self._open(ev, "resolution", now)
        elif ev.event == "agent_replied":
            out += self._meet(ev.ticket_id, "first_response", now)
            out += self._meet(ev.ticket_id, "next_response", now)
        elif ev.event in ("customer_replied", "message_added"):
            for t in self._running(ev.ticket_id):
                if t.state == "paused" and t.paused_at is not None:
                    t.due_at += ev.at - t.paused_at
                    t.paused_at = None
                    t.state = "running"
                    self.schedule(t)
                    out.append(self._event(t, "resumed", now))
            if not self._running(ev.ticket_id, "first_response"):
                out += self._open(ev, "next_response", now)
        elif ev.event == "waiting_on_customer":
            for t in self._running(ev.ticket_id):
                if t.state == "running":
                    t.state = "paused"
                    t.paused_at = ev.at
                    out.append(self._event(t, "paused", now))
        elif ev.event == "resolved":
            out += self._meet(ev.ticket_id, "resolution", now)
            for t in self._running(ev.ticket_id):
                t.state = "cancelled"
                out.append(self._event(t, "cancelled", now))
        changed = {
            i
            for i in self.by_ticket.get(ev.ticket_id, [])
            if before.get(i) != (self.timers[i].state, self.timers[i].due_at) or i not in before
        } | {e.timer_id for e in out}
        return out, changed

    def fire_due(self, now: datetime) -> tuple[list[SlaEvent], set[str]]:
        """Warnings and breaches whose time has come, each at most once per timer."""
        out: list[SlaEvent] = []
        changed: set[str] = set()
        while self.heap and self.heap[0][0] <= now:
            at, tid, kind = heapq.heappop(self.heap)
            t = self.timers.get(tid)
            if t is None or t.state != "running":
                continue
            if kind == "warning":
                if t.warned or at != t.warn_at(self.policy.warning_ratio):
                    continue  # stale entry from before a pause moved the deadline
                t.warned = True
            else:
                if t.breached or at != t.due_at:
                    continue
                t.breached = True
            out.append(self._event(t, "warning" if kind == "warning" else "breached", now))
            changed.add(tid)
        return out, changed
