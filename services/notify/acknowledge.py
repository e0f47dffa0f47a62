"""Acknowledgements and the wait they quote (the pure parts are in estimate.py).

An acknowledgement quotes sla's first-response deadline, and `opened` (support.tickets)
and the timer's `started` (support.sla) arrive in either order: each half is stored as it
comes (store/acks.py) and the acknowledgement is decided once both are known — or, sla
silent, at `wait_until` with the ticket alone (`overdue`). It says the customer's place
in the queue and the estimate at the queue's measured pace; when that estimate turns out
wrong while the customer still waits, one correction follows. A breached deadline's
apology carries a new estimate too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from services.notify.decide import (
    Batch,
    Facts,
    TicketView,
    notices_for,
    on_sla_event,
    spec_for,
)
from services.notify.estimate import (
    Ack,
    Deadline,
    Estimate,
    EstimatePolicy,
    QueueIndex,
    estimate,
    pace_s,
    recheck_at,
)
from services.notify.metrics import NotifyMetrics
from services.notify.render import acknowledgement_template
from services.notify.store import NotifyStores
from services.notify.store.tickets import current_views
from shared.contracts.sla import SlaEvent

FIRST_RESPONSE_DEADLINE = frozenset({"started", "retargeted"})
Opened = tuple[str, str, datetime]  # (ticket id, the opened event's id, wait for sla until)


def deadlines_of(events: Sequence[tuple[SlaEvent, str]]) -> list[tuple[str, Deadline]]:
    """The first-response deadlines among sla's events (the tickets they may acknowledge)."""
    return [
        (
            ev.ticket_id,
            Deadline(ev.target_s, ev.due_at, ev.at, calendar=ev.calendar, policy=ev.policy),
        )
        for ev, _ in events
        if ev.metric == "first_response" and ev.event in FIRST_RESPONSE_DEADLINE
    ]


def wait_of(
    view: TicketView, queue: QueueIndex, pace: float | None, ack: Ack, now: datetime
) -> Estimate:
    queued = view.queued
    position = queue.position(view.ticket_id, queued) if queued else view.position or 1
    return estimate(position, pace, ack.deadline, now)


@dataclass
class Acknowledgements:
    stores: NotifyStores
    policy: EstimatePolicy
    metrics: NotifyMetrics

    async def pair(
        self,
        opened: list[Opened],
        deadlines: list[tuple[str, Deadline]],
        batch: Batch,
        queue: QueueIndex,
        now: datetime,
    ) -> None:
        """Acknowledge the tickets whose two halves (ticket, deadline) are now known; store
        the half of the others. An acknowledgement told now is stored once, whole (`told`)."""
        ids = {tid for tid, _, _ in opened} | {tid for tid, _ in deadlines}
        acks = await self.stores.acks.get(ids)
        for tid, ce_id, _ in opened:
            acks[tid] = replace(acks.get(tid) or Ack(tid), cause_event_id=ce_id)
        for tid, d in deadlines:
            cur = acks.get(tid) or Ack(tid)
            if cur.deadline is None or cur.deadline.at < d.at:
                acks[tid] = replace(cur, deadline=d)
        ready = [a for a in acks.values() if a.cause_event_id and a.deadline and not a.decided]
        await self.acknowledge(ready, batch, queue, now)
        told = {a.ticket_id for a in batch.told}
        await self.stores.acks.opened([o for o in opened if o[0] not in told], now)
        await self.stores.acks.deadlines([d for d in deadlines if d[0] not in told], now)

    async def acknowledge(
        self, acks: Sequence[Ack], batch: Batch, queue: QueueIndex, now: datetime
    ) -> None:
        if not acks:
            return
        views = await current_views(self.stores.tickets, (a.ticket_id for a in acks), batch.views)
        incidents = await self.stores.incidents.open()
        facts = (
            await self.stores.conversations.facts(v.conversation_id for v in views.values())
            if incidents
            else {}
        )
        recent = await self.stores.queue.recent()
        for ack in acks:
            view = views.get(ack.ticket_id)
            if view is None or ack.cause_event_id is None:
                continue  # its view comes with the redelivered `opened`
            wait = wait_of(
                view, queue, pace_s(recent.get(view.priority, []), self.policy), ack, now
            )
            notices = notices_for(
                incidents, view.category, facts.get(view.conversation_id or "", Facts())
            )
            template = acknowledgement_template(view.category, view.possible_urgent)
            spec = spec_for(view, "acknowledgement", template, ack.cause_event_id)
            batch.specs.append(replace(spec, wait=wait, notices=notices))
            batch.links += [(iid, view.ticket_id) for iid in notices]
            batch.told.append(
                replace(
                    ack,
                    decided=True,
                    position=wait.position,
                    expected_s=wait.expected_s,
                    told_at=now,
                    recheck_at=recheck_at(now, wait, self.policy),
                )
            )

    async def correct(
        self, rechecks: Sequence[Ack], batch: Batch, queue: QueueIndex, now: datetime
    ) -> None:
        """One corrected estimate to each customer still waiting past the one they got."""
        if not rechecks:
            return
        views = await current_views(
            self.stores.tickets, (a.ticket_id for a in rechecks), batch.views
        )
        recent = await self.stores.queue.recent()
        for ack in rechecks:
            view = views.get(ack.ticket_id)
            if view is None or view.queued_since is None or ack.cause_event_id is None:
                continue  # an agent has it (or it is gone): the estimate no longer matters
            wait = wait_of(
                view, queue, pace_s(recent.get(view.priority, []), self.policy), ack, now
            )
            spec = spec_for(view, "estimate_corrected", "estimate_corrected", ack.cause_event_id)
            batch.specs.append(replace(spec, wait=wait))
            self.metrics.corrections.inc()

    async def apologise(
        self, events: Sequence[tuple[SlaEvent, str]], batch: Batch, queue: QueueIndex
    ) -> None:
        """An apology with a new estimate for each breached deadline."""
        breached = [(ev, ce_id) for ev, ce_id in events if ev.event == "breached"]
        if not breached:
            return
        views = await current_views(
            self.stores.tickets, (ev.ticket_id for ev, _ in breached), batch.views
        )
        recent = await self.stores.queue.recent()
        for ev, ce_id in breached:
            view = views.get(ev.ticket_id)
            spec = on_sla_event(view, ev, ce_id)
            if spec is None:
                continue
            pace = pace_s(recent.get(spec.priority, []), self.policy)
            queued = view.queued if view else None
            position = queue.position(ev.ticket_id, queued) if queued else 1
            # Measured: the place in the queue at its pace; else half the target again.
            expected = pace * position if pace is not None else ev.target_s / 2
            batch.specs.append(replace(spec, expected_s=max(60.0, expected)))
