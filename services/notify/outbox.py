"""Outbox policy: retry backoff, the per-customer rate limit, merging. Pure functions.

Rate limit (per customer, over every channel and ticket): at most `max_count` messages
in any `window_s` seconds. Due notifications beyond that wait until the window has room,
oldest first — except the urgent acknowledgements (stolen funds, exposed secret), which
always go at once (they still count). A status update that a later status update of the
same ticket makes stale ("an agent is on it" followed by "resolved") is merged into it
instead of being sent: the customer gets the newer one only.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

JITTER = 0.2
STATUS_TEMPLATES = frozenset({"agent_assigned", "waiting_for_you", "resolved"})
SUPERSEDABLE = frozenset({"agent_assigned", "waiting_for_you"})


def backoff_s(failures: int, base_s: float, max_s: float, key: str = "") -> float:
    """Wait after the `failures`-th failed attempt: base·2^(failures−1), at most `max_s`.

    With a key (the notification id) up to 20 % is taken off, the same for the same
    key and attempt, so retries after an outage spread out instead of arriving at once.
    """
    raw = float(min(max_s, base_s * 2.0 ** max(0, failures - 1)))
    if not key:
        return raw
    digest = hashlib.sha256(f"{key}\x00{failures}".encode()).digest()
    fraction = int.from_bytes(digest[:4], "big") / 0xFFFFFFFF
    return float(raw * (1 - JITTER * fraction))


def schedule(base_s: float, max_s: float, attempts: int) -> list[float]:
    """Waits between `attempts` tries (without jitter): [base, 2·base, 4·base, ...]."""
    return [backoff_s(n, base_s, max_s) for n in range(1, attempts)]


@dataclass(frozen=True)
class RateRule:
    max_count: int
    window_s: float


@dataclass(frozen=True)
class Candidate:
    notification_id: str
    customer_id: str
    ticket_id: str
    template: str
    created_at: datetime
    urgent: bool = False


@dataclass
class Plan:
    send: list[str] = field(default_factory=list)
    delay: dict[str, datetime] = field(default_factory=dict)  # id -> not before
    merged: dict[str, str] = field(default_factory=dict)  # id -> id of the newer one


def plan_sends(
    candidates: Sequence[Candidate],
    recent: Mapping[str, Sequence[datetime]],
    now: datetime,
    rule: RateRule,
) -> Plan:
    """Which due notifications go now, which wait (until when), which are merged.

    `recent` holds, per customer, when messages were sent to them lately.
    """
    plan = Plan()
    newest_status: dict[str, Candidate] = {}
    for c in candidates:
        if c.template in STATUS_TEMPLATES:
            cur = newest_status.get(c.ticket_id)
            if cur is None or (c.created_at, c.notification_id) > (
                cur.created_at,
                cur.notification_id,
            ):
                newest_status[c.ticket_id] = c
    live = []
    for c in candidates:
        newer = newest_status.get(c.ticket_id)
        if c.template in SUPERSEDABLE and newer is not None and newer is not c:
            plan.merged[c.notification_id] = newer.notification_id
        else:
            live.append(c)
    window = timedelta(seconds=rule.window_s)
    sent: dict[str, list[datetime]] = defaultdict(list)
    for customer, times in recent.items():
        sent[customer] = sorted(t for t in times if t > now - window)
    for c in sorted(live, key=lambda c: (not c.urgent, c.created_at, c.notification_id)):
        times = sent[c.customer_id]
        if c.urgent or len(times) < rule.max_count:
            plan.send.append(c.notification_id)
            times.append(now)
            times.sort()
        else:
            # Room again when the oldest of the last `max_count` leaves the window; the
            # slot is taken so the next waiting one lines up after this one.
            at = times[-rule.max_count] + window
            plan.delay[c.notification_id] = at
            times.append(at)
            times.sort()
    return plan
