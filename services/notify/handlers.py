"""Notify's Kafka edge: messages, customers, ticket, SLA and incident events in;
notifications recorded.

One batch (inputs.py sorts it by kind): remember routes and facts (route.py) and customers;
fold ticket events into notify's views and decide what the customer is told (decide.py);
pair acknowledgements with sla's deadlines and quote the wait (acknowledge.py); tell
tickets about incidents; record the notifications (record.py: the outbox, held by this
process's sender), then the views; return the `recorded` announcements and dead letters
for the edge to publish. The sender (delivery.py) runs `sweep` for the time-driven part.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from services.notify.acknowledge import Acknowledgements, Opened, deadlines_of
from services.notify.decide import Batch, Facts, assignment_sample, incident_specs, on_ticket_event
from services.notify.delivery import Held
from services.notify.estimate import EstimatePolicy, QueueIndex
from services.notify.inputs import parse
from services.notify.metrics import NotifyMetrics
from services.notify.record import Recorder, announce
from services.notify.render import Templates
from services.notify.route import route_updates
from services.notify.store import NotifyStores
from services.notify.store.tickets import current_views
from shared.contracts.incidents import Incident
from shared.contracts.tickets import TicketEvent
from shared.events import OutboundEvent

log = logging.getLogger(__name__)
SWEEP_LIMIT = 1000

__all__ = ["Notifier", "announce"]  # announce: the sender's events too (app.py)


@dataclass
class Notifier:
    stores: NotifyStores
    templates: Templates
    policy: EstimatePolicy
    metrics: NotifyMetrics
    retention_s: float = 90 * 86400
    sla_wait_s: float = 30.0  # an acknowledgement waits this long for sla's deadline
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    held: Held | None = None  # this process's sender, which sends what is recorded here
    acks: Acknowledgements = field(init=False)
    recorder: Recorder = field(init=False)

    def __post_init__(self) -> None:
        self.acks = Acknowledgements(self.stores, self.policy, self.metrics)
        self.recorder = Recorder(self.stores, self.templates, self.metrics, self.held)

    async def process(self, records: Sequence[Any]) -> list[OutboundEvent]:
        now = self.clock()
        got = parse(records, now, lambda reason: self.metrics.deadletters.labels(reason).inc())
        # Routes and customers first: a ticket event in the same batch then finds them.
        await self.stores.conversations.save(route_updates(got.messages, now, self.retention_s))
        await self.stores.customers.save(got.customers)
        await self.stores.customers.delete(got.deleted)
        batch = Batch()
        if got.tickets or got.sla:
            queue = QueueIndex(await self.stores.tickets.queued())
            opened = await self._on_tickets(got.tickets, batch, queue, now)
            await self.acks.apologise(got.sla, batch, queue)
            deadlines = deadlines_of(got.sla)
            if opened or deadlines:
                await self.acks.pair(opened, deadlines, batch, queue, now)
        await self._on_incidents(got.incidents, batch)
        return got.dead + await self._store(batch, now)

    async def sweep(self) -> list[OutboundEvent]:
        """Acknowledgements whose deadline never came, and estimates that turned out wrong."""
        now = self.clock()
        overdue = await self.stores.acks.overdue(now, SWEEP_LIMIT)
        rechecks = await self.stores.acks.rechecks_due(now, SWEEP_LIMIT)
        if not overdue and not rechecks:
            return []
        batch = Batch()
        queue = QueueIndex(await self.stores.tickets.queued())
        await self.acks.acknowledge([a for a in overdue if a.cause_event_id], batch, queue, now)
        await self.acks.correct(rechecks, batch, queue, now)
        out = await self._store(batch, now)
        await self.stores.acks.rechecked(a.ticket_id for a in rechecks)
        return out

    async def _store(self, batch: Batch, now: datetime) -> list[OutboundEvent]:
        out = await self.recorder.record(batch, now)
        # After the notifications: a crash in between re-decides the same ids.
        await self.stores.acks.told(batch.told, now)
        await self.stores.queue.record(batch.samples)
        await self.stores.tickets.save(batch.views.values(), now)
        return out

    async def _on_tickets(
        self, tickets: list[tuple[TicketEvent, str]], batch: Batch, queue: QueueIndex, now: datetime
    ) -> list[Opened]:
        """Fold ticket events into the views; the tickets opened (their acknowledgement
        waits for sla's deadline until sla_wait_s from now: a backlog is no silence)."""
        views = await current_views(self.stores.tickets, (ev.ticket_id for ev, _ in tickets), {})
        opened: list[Opened] = []
        wait_until = now + timedelta(seconds=self.sla_wait_s)
        for ev, ce_id in tickets:
            before = views.get(ev.ticket_id)
            view, specs = on_ticket_event(before, ev, ce_id)
            if before is not None and (sample := assignment_sample(before, view, ev)):
                batch.samples.append(sample)
            queue.set(ev.ticket_id, view.queued)
            if view.queued is not None and (before is None or before.queued_since is None):
                view = replace(view, position=queue.position(ev.ticket_id, view.queued))
            views[ev.ticket_id] = batch.views[ev.ticket_id] = view
            for s in specs:
                if s.cause == "acknowledgement":
                    opened.append((s.ticket_id, s.cause_event_id, wait_until))
                else:
                    batch.specs.append(s)
        return opened

    async def _on_incidents(self, events: list[tuple[Incident, str]], batch: Batch) -> None:
        for incident, ce_id in sorted(events, key=lambda e: e[0].version):
            # A stale event (an older version redelivered) acts as the newest version.
            current = await self.stores.incidents.apply(incident)
            if current.open:
                views = await self.stores.tickets.open_views(current.affected.categories)
                facts = await self.stores.conversations.facts(v.conversation_id for v in views)
                pairs = [(v, facts.get(v.conversation_id or "", Facts())) for v in views]
                specs, linked = incident_specs(current, pairs, [], ce_id)
                batch.links += [(current.incident_id, tid) for tid in linked]
            else:
                tids = await self.stores.incidents.linked_tickets(current.incident_id)
                linked_views = await current_views(self.stores.tickets, tids, batch.views)
                specs, _ = incident_specs(current, [], list(linked_views.values()), ce_id)
            batch.specs += specs
            log.info(
                "incident applied",
                extra={
                    "incident_id": current.incident_id,
                    "status": current.status,
                    "version": current.version,
                    "notifications": len(specs),
                },
            )
