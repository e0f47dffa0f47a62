"""The wait a customer is told: their place in the queue, and when to expect a reply,
from what the queue really does. Pure functions of (queue, measurements, deadline, now).

- Position: tickets waiting at a higher priority, and those of the same priority the
  router serves first (a higher VIP tier, or the same tier queued earlier), plus one.
- Pace: seconds per place in the queue, per priority, measured from ticket events — a
  ticket queued at place n and assigned w seconds later took w/n per place — as an
  exponentially weighted median of the latest measurements (one outlier moves it little).
- Deadline: the first-response timer sla started (`support.sla`): its target and due
  time, tier, category and calendar included. Its business clock starts at
  `due_at - target_s` at the latest: later than now when the desk is closed (exact when
  the target fits in the desk's next open hours, as first-response targets do).
- The estimate is position × pace, counted from the desk's opening; past the SLA due it
  says so instead of promising the target; with nothing measured it quotes the target;
  with neither it promises nothing.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

PRIORITIES = ("P1", "P2", "P3", "P4")
WaitKind = Literal["estimate", "past_due", "desk_closed", "target_only", "unknown"]
CLOSED_SLACK_S = 60.0  # a clock starting within a minute is not "the desk is closed"


class EstimatePolicy(BaseModel):
    """`policy/notify.yaml` `estimate:`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    samples: int = Field(default=64, ge=1, description="Assignments kept per priority")
    half_life: float = Field(default=16, gt=0, description="Weight halves every N older")
    min_samples: int = Field(default=3, ge=1, description="Fewer: nothing measured yet")
    correction_margin: float = Field(default=0.5, ge=0, description="Late by this share")
    correction_min_s: float = Field(default=120, ge=0, description="... and at least this")


def tier_rank(tier: str) -> int:
    """`vip7` -> 7, anything else 0: within a priority the router serves higher tiers first."""
    digits = tier.removeprefix("vip")
    return int(digits) if tier.startswith("vip") and digits.isdigit() else 0


@dataclass(frozen=True)
class Queued:
    priority: str
    since: datetime
    tier_rank: int = 0

    def key(self, ticket_id: str) -> tuple[int, datetime, str]:
        return (-self.tier_rank, self.since, ticket_id)


@dataclass(frozen=True)
class Sample:
    """One assignment: how long the ticket waited, and from which place."""

    priority: str
    ticket_id: str
    cycle: int
    wait_s: float
    position: int
    at: datetime

    @property
    def per_place_s(self) -> float:
        return self.wait_s / max(1, self.position)


@dataclass(frozen=True)
class Deadline:
    """A first-response timer as sla published it (`started` or `retargeted`)."""

    target_s: float
    due_at: datetime
    at: datetime  # when sla emitted it: the newest wins
    calendar: str | None = None
    policy: str = "default"


@dataclass(frozen=True)
class Ack:
    """A ticket's acknowledgement: what it waits for, and what it told."""

    ticket_id: str
    cause_event_id: str | None = None  # the `opened` event; none until it came
    wait_until: datetime | None = None
    deadline: Deadline | None = None
    decided: bool = False
    position: int | None = None
    expected_s: float | None = None
    told_at: datetime | None = None
    recheck_at: datetime | None = None


@dataclass(frozen=True)
class Estimate:
    kind: WaitKind
    position: int
    expected_s: float | None = None  # from now to the expected first reply
    target_s: float | None = None
    opens_in_s: float | None = None  # the desk opens in this many seconds


class QueueIndex:
    """Queued tickets by priority, in the order the router serves them within one."""

    def __init__(self, queued: Mapping[str, Queued]) -> None:
        self._where: dict[str, Queued] = dict(queued)
        self._lists: dict[str, list[tuple[int, datetime, str]]] = {p: [] for p in PRIORITIES}
        for tid, q in queued.items():
            self._lists.setdefault(q.priority, []).append(q.key(tid))
        for items in self._lists.values():
            items.sort()

    def set(self, ticket_id: str, q: Queued | None) -> None:
        old = self._where.pop(ticket_id, None)
        if old is not None:
            items = self._lists[old.priority]
            i = bisect.bisect_left(items, old.key(ticket_id))
            if i < len(items) and items[i] == old.key(ticket_id):
                items.pop(i)
        if q is not None:
            self._where[ticket_id] = q
            bisect.insort(self._lists.setdefault(q.priority, []), q.key(ticket_id))

    def position(self, ticket_id: str, q: Queued) -> int:
        """1 + tickets ahead: every higher priority, and those of its own served first."""
        rank = PRIORITIES.index(q.priority) if q.priority in PRIORITIES else len(PRIORITIES)
        ahead = sum(len(self._lists.get(p, [])) for p in PRIORITIES[:rank])
        ahead += bisect.bisect_left(self._lists.get(q.priority, []), q.key(ticket_id))
        return ahead + 1


def pace_s(samples: Sequence[Sample], policy: EstimatePolicy) -> float | None:
    """Seconds per place: the exponentially weighted median of the latest measurements
    (newest weighs 1, each older one 2^(-1/half_life) less); None below `min_samples`."""
    seen: dict[tuple[str, int], Sample] = {}
    for s in sorted(samples, key=lambda s: s.at):
        seen[(s.ticket_id, s.cycle)] = s  # a redelivered assignment counts once
    latest = sorted(seen.values(), key=lambda s: s.at, reverse=True)[: policy.samples]
    if len(latest) < policy.min_samples:
        return None
    weighted = sorted(
        (s.per_place_s, 0.5 ** (rank / policy.half_life)) for rank, s in enumerate(latest)
    )
    half = sum(w for _, w in weighted) / 2
    total = 0.0
    for value, w in weighted:
        total += w
        if total >= half:
            return value
    return weighted[-1][0]


def estimate(
    position: int,
    pace: float | None,
    deadline: Deadline | None,
    now: datetime,
) -> Estimate:
    """What to tell a customer at `position` now."""
    target = deadline.target_s if deadline else None
    if pace is None:
        if deadline is None:
            return Estimate("unknown", position)
        due_in = (deadline.due_at - now).total_seconds()
        if due_in < 1:
            return Estimate("unknown", position)  # already late: no promise to quote
        return Estimate("target_only", position, due_in, target)
    # In seconds from now (no datetime arithmetic: any instant sla sends stays in range).
    opens_in = None
    if deadline is not None:
        due_in = (deadline.due_at - now).total_seconds()
        if due_in - deadline.target_s > CLOSED_SLACK_S:
            opens_in = due_in - deadline.target_s  # the desk is closed: work starts then
    expected_s = max(1.0, (opens_in or 0.0) + pace * position)
    if deadline is not None and expected_s > (deadline.due_at - now).total_seconds() + 1:
        return Estimate("past_due", position, expected_s, target, opens_in)
    if opens_in is not None:
        return Estimate("desk_closed", position, expected_s, target, opens_in)
    return Estimate("estimate", position, expected_s, target)


def recheck_at(told_at: datetime, e: Estimate, policy: EstimatePolicy) -> datetime | None:
    """When an estimate has turned out wrong if the customer still waits for an agent."""
    if e.expected_s is None:
        return None
    late_s = max(policy.correction_margin * e.expected_s, policy.correction_min_s)
    try:
        return told_at + timedelta(seconds=e.expected_s + late_s)
    except OverflowError:  # a desk that opens beyond the calendar: nothing to recheck
        return None


def samples_by_priority(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    for s in samples:
        out.setdefault(s.priority, []).append(s)
    return out


class NotifyPolicy(BaseModel):
    """`policy/notify.yaml`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    estimate: EstimatePolicy = EstimatePolicy()


def load_policy(path: Path) -> NotifyPolicy:
    return NotifyPolicy.model_validate(yaml.safe_load(path.read_text("utf-8")) or {})
