"""Notify's Kafka edge: messages, customers, ticket, SLA and incident events in;
notifications recorded.

One batch: parse; remember routes and facts (messages) and customers (messages and
`support.customers`); fold ticket events into notify's ticket views and decide what the
customer is told (decide.py); an acknowledgement waits until sla's first-response
deadline is known too (or gives up waiting: `sweep`), then says the customer's place in
the queue and the estimate (estimate.py); render (render.py); store the notifications
(the outbox — the sender loop delivers them), then the views; return the `recorded`
announcements and dead letters for the edge to publish. Redelivered input decides the
same notification ids, which the outbox already holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from services.notify.decide import (
    Batch,
    Facts,
    Spec,
    TicketView,
    assignment_sample,
    incident_specs,
    notices_for,
    notification_id,
    on_sla_event,
    on_ticket_event,
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
from services.notify.render import (
    IncidentText,
    Rendered,
    Templates,
    acknowledgement_template,
    render,
)
from services.notify.route import route_updates
from services.notify.store import NotifyStores
from services.notify.store.customers import Customer
from services.notify.store.outbox import Notification
from shared.consume import Contracts, Decoder
from shared.contracts.customers import CUSTOMER_UPDATED, CustomerUpdated
from shared.contracts.incidents import INCIDENT_EVENT_TYPES, Incident
from shared.contracts.messages import MESSAGE_RECEIVED, MessageReceived
from shared.contracts.notifications import (
    NotificationRecorded,
    NotificationStatus,
    notification_event_type,
)
from shared.contracts.sla import SlaEvent
from shared.contracts.tickets import TicketEvent
from shared.events import OutboundEvent, make_event
from shared.ids import event_id
from shared.topics import CUSTOMERS, NOTIFICATIONS

log = logging.getLogger(__name__)
SOURCE = "omniroute/notify"
SWEEP_LIMIT = 1000

__all__ = ["Notifier", "announce", "notification_id"]


def announce(n: NotificationRecorded, status: NotificationStatus) -> OutboundEvent:
    """The `support.notifications` event for one step of a notification's life."""
    if status == "recorded":
        eid = n.notification_id  # unchanged since the first version of notify
    elif status == "failed":
        eid = event_id("notification", n.notification_id, status, str(n.attempts))
    else:
        eid = event_id("notification", n.notification_id, status)
    return make_event(
        n,
        topic=NOTIFICATIONS,
        event_type=notification_event_type(status),
        event_id=eid,
        source=SOURCE,
        key=n.ticket_id,
        time=n.at,
        subject=n.ticket_id,
    )


INPUTS = Contracts(
    {
        MESSAGE_RECEIVED: MessageReceived,
        CUSTOMER_UPDATED: CustomerUpdated,
        "omniroute.ticket.": TicketEvent,
        "omniroute.sla.": SlaEvent,
        **dict.fromkeys(INCIDENT_EVENT_TYPES, Incident),
    }
)
FIRST_RESPONSE_DEADLINE = frozenset({"started", "retargeted"})


@dataclass
class Inputs:
    messages: list[MessageReceived] = field(default_factory=list)
    customers: list[Customer] = field(default_factory=list)
    deleted: set[str] = field(default_factory=set)  # customer ids (tombstones)
    tickets: list[tuple[TicketEvent, str]] = field(default_factory=list)
    sla: list[tuple[SlaEvent, str]] = field(default_factory=list)
    incidents: list[tuple[Incident, str]] = field(default_factory=list)
    dead: list[OutboundEvent] = field(default_factory=list)


def customer_of_message(m: MessageReceived) -> Customer:
    return Customer(
        customer_id=m.customer_id,
        as_of=m.received_at,
        tier=m.customer_tier,
        anti_phishing_code=m.anti_phishing_code,
        language=m.customer_language,
    )


def customer_of_update(c: CustomerUpdated) -> Customer:
    return Customer(
        customer_id=c.customer_id,
        as_of=c.at,
        tier=c.tier,
        anti_phishing_code=c.anti_phishing_code,
        language=c.language,
        version=c.version,
    )


def notification_of_spec(s: Spec, rendered: Rendered, now: datetime) -> Notification:
    """The outbox's record of one decided notification, rendered, due now."""
    return Notification(
        notification_id=s.notification_id,
        ticket_id=s.ticket_id,
        customer_id=s.customer_id,
        conversation_id=s.conversation_id,
        channel=s.channel,
        template=s.template,
        cause=s.cause,
        language=rendered.language,
        subject=rendered.subject,
        text=rendered.text,
        priority=s.priority,
        urgent=s.urgent,
        incident_id=s.incident_id,
        cause_event_id=s.cause_event_id,
        created_at=now,
        next_at=now,
        position=s.wait.position if s.wait else None,
        expected_s=s.wait.expected_s if s.wait else s.expected_s,
    )


def _offset(record: Any) -> tuple[int, int]:
    return (getattr(record, "partition", 0), getattr(record, "offset", 0))


@dataclass
class Notifier:
    stores: NotifyStores
    templates: Templates
    policy: EstimatePolicy
    metrics: NotifyMetrics
    retention_s: float = 90 * 86400
    sla_wait_s: float = 30.0  # an acknowledgement waits this long for sla's deadline
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def _parse(self, records: Sequence[Any], now: datetime) -> Inputs:
        """The batch's events by kind, and dead letters for the records that are not one.

        Poison (the consumer kit's rules): a record without `ce_type` or `ce_id`, a type
        notify does not consume (its topics carry only the contract's types: an unknown
        one is parked with its reason, not dropped), and data that fails its type's model.
        A null value on support.customers is a tombstone: the customer is deleted.
        """
        decoder = Decoder(
            "notify",
            INPUTS,
            on_dead=lambda reason: self.metrics.deadletters.labels(reason).inc(),
            tombstones=frozenset({CUSTOMERS}),
        )
        batch = decoder.decode(records, now)
        got = Inputs(dead=batch.dead)
        # Per customer, the last record on support.customers decides: update or deletion.
        last: dict[str, tuple[tuple[int, int], CustomerUpdated | None]] = {}
        for t in batch.tombstones:
            cur = last.get(t.key)
            if cur is None or cur[0] <= _offset(t.record):
                last[t.key] = (_offset(t.record), None)
        for item in batch.events:
            ev = item.event
            if isinstance(ev, MessageReceived):
                got.messages.append(ev)
                got.customers.append(customer_of_message(ev))
            elif isinstance(ev, CustomerUpdated):
                cur = last.get(ev.customer_id)
                if cur is None or cur[0] <= _offset(item.record):
                    last[ev.customer_id] = (_offset(item.record), ev)
            elif isinstance(ev, TicketEvent):
                got.tickets.append((ev, item.ce_id))
            elif isinstance(ev, SlaEvent):
                got.sla.append((ev, item.ce_id))
            elif isinstance(ev, Incident):
                got.incidents.append((ev, item.ce_id))
        for cid, (_, update) in last.items():
            if update is None:
                got.deleted.add(cid)
            else:
                got.customers.append(customer_of_update(update))
        got.customers = [c for c in got.customers if c.customer_id not in got.deleted]
        return got

    async def process(self, records: Sequence[Any]) -> list[OutboundEvent]:
        now = self.clock()
        got = self._parse(records, now)
        # Routes and customers first: a ticket event in the same batch then finds them.
        await self.stores.conversations.save(route_updates(got.messages, now, self.retention_s))
        await self.stores.customers.save(got.customers)
        await self.stores.customers.delete(got.deleted)
        batch = Batch()
        queue = QueueIndex(await self.stores.tickets.queued()) if got.tickets or got.sla else None
        opened = await self._on_tickets(got.tickets, batch, queue, now)
        deadlines = await self._on_sla(got.sla, batch, queue)
        if (opened or deadlines) and queue is not None:
            await self._pair(opened, deadlines, batch, queue, now)
        await self._on_incidents(got.incidents, batch)
        return got.dead + await self._store(batch, now)

    async def _pair(
        self,
        opened: list[tuple[str, str, datetime]],
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
        await self._acknowledge(ready, batch, queue, now)
        told = {a.ticket_id for a in batch.told}
        await self.stores.acks.opened([o for o in opened if o[0] not in told], now)
        await self.stores.acks.deadlines([d for d in deadlines if d[0] not in told], now)

    async def sweep(self) -> list[OutboundEvent]:
        """Acknowledgements whose deadline never came, and estimates that turned out wrong."""
        now = self.clock()
        overdue = await self.stores.acks.overdue(now, SWEEP_LIMIT)
        rechecks = await self.stores.acks.rechecks_due(now, SWEEP_LIMIT)
        if not overdue and not rechecks:
            return []
        batch = Batch()
        queue = QueueIndex(await self.stores.tickets.queued())
        await self._acknowledge([a for a in overdue if a.cause_event_id], batch, queue, now)
        await self._correct(rechecks, batch, queue, now)
        out = await self._store(batch, now)
        await self.stores.acks.rechecked(a.ticket_id for a in rechecks)
        return out

    async def _store(self, batch: Batch, now: datetime) -> list[OutboundEvent]:
        out = await self._record(batch, now)
        # After the notifications: a crash in between re-decides the same ids.
        await self.stores.acks.told(batch.told, now)
        await self.stores.queue.record(batch.samples)
        await self.stores.tickets.save(batch.views.values(), now)
        return out

    # -- decide ----------------------------------------------------------------------

    async def _views(self, ticket_ids: Iterable[str], batch: Batch) -> dict[str, TicketView]:
        ids = set(ticket_ids)
        views = await self.stores.tickets.get(ids - set(batch.views))
        views.update({t: v for t, v in batch.views.items() if t in ids})
        return views

    async def _on_tickets(
        self,
        tickets: list[tuple[TicketEvent, str]],
        batch: Batch,
        queue: QueueIndex | None,
        now: datetime,
    ) -> list[tuple[str, str, datetime]]:
        """Fold ticket events into the views; the tickets opened (id, event id, how long
        their acknowledgement waits for sla's deadline)."""
        if not tickets or queue is None:
            return []
        views = await self._views((ev.ticket_id for ev, _ in tickets), batch)
        opened: list[tuple[str, str, datetime]] = []
        # sla gets as long from when notify learns of the ticket (a backlog is no silence).
        wait_until = now + timedelta(seconds=self.sla_wait_s)
        for ev, ce_id in tickets:
            before = views.get(ev.ticket_id)
            view, specs = on_ticket_event(before, ev, ce_id)
            if before is not None and (sample := assignment_sample(before, view, ev)):
                batch.samples.append(sample)
            queued = view.queued
            queue.set(ev.ticket_id, queued)
            if queued is not None and (before is None or before.queued_since is None):
                view = replace(view, position=queue.position(ev.ticket_id, queued))
            views[ev.ticket_id] = batch.views[ev.ticket_id] = view
            for s in specs:
                if s.cause == "acknowledgement":
                    opened.append((s.ticket_id, s.cause_event_id, wait_until))
                else:
                    batch.specs.append(s)
        return opened

    async def _on_sla(
        self,
        events: list[tuple[SlaEvent, str]],
        batch: Batch,
        queue: QueueIndex | None,
    ) -> list[tuple[str, Deadline]]:
        """First-response deadlines (the tickets they may acknowledge); an apology with a
        new estimate for each breach."""
        deadlines = [
            (
                ev.ticket_id,
                Deadline(ev.target_s, ev.due_at, ev.at, calendar=ev.calendar, policy=ev.policy),
            )
            for ev, _ in events
            if ev.metric == "first_response" and ev.event in FIRST_RESPONSE_DEADLINE
        ]
        breached = [(ev, ce_id) for ev, ce_id in events if ev.event == "breached"]
        if breached and queue is not None:
            views = await self._views((ev.ticket_id for ev, _ in breached), batch)
            recent = await self.stores.queue.recent()
            for ev, ce_id in breached:
                spec = on_sla_event(views.get(ev.ticket_id), ev, ce_id)
                if spec is None:
                    continue
                view = views.get(ev.ticket_id)
                pace = pace_s(recent.get(spec.priority, []), self.policy)
                queued = view.queued if view else None
                position = queue.position(ev.ticket_id, queued) if queued else 1
                # Measured: the place in the queue at its pace; else half the target again.
                expected = pace * position if pace is not None else ev.target_s / 2
                batch.specs.append(replace(spec, expected_s=max(60.0, expected)))
        return deadlines

    def _wait(
        self, view: TicketView, queue: QueueIndex, pace: float | None, ack: Ack, now: datetime
    ) -> Estimate:
        queued = view.queued
        position = queue.position(view.ticket_id, queued) if queued else view.position or 1
        return estimate(position, pace, ack.deadline, now)

    async def _acknowledge(
        self, acks: Sequence[Ack], batch: Batch, queue: QueueIndex, now: datetime
    ) -> None:
        if not acks:
            return
        views = await self._views((a.ticket_id for a in acks), batch)
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
            pace = pace_s(recent.get(view.priority, []), self.policy)
            wait = self._wait(view, queue, pace, ack, now)
            notices = notices_for(
                incidents, view.category, facts.get(view.conversation_id or "", Facts())
            )
            template = acknowledgement_template(view.category)
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

    async def _correct(
        self, rechecks: Sequence[Ack], batch: Batch, queue: QueueIndex, now: datetime
    ) -> None:
        """One corrected estimate to each customer still waiting past the one they got."""
        if not rechecks:
            return
        views = await self._views((a.ticket_id for a in rechecks), batch)
        recent = await self.stores.queue.recent()
        for ack in rechecks:
            view = views.get(ack.ticket_id)
            if view is None or view.queued_since is None or ack.cause_event_id is None:
                continue  # an agent has it (or it is gone): the estimate no longer matters
            pace = pace_s(recent.get(view.priority, []), self.policy)
            wait = self._wait(view, queue, pace, ack, now)
            spec = spec_for(view, "estimate_corrected", "estimate_corrected", ack.cause_event_id)
            batch.specs.append(replace(spec, wait=wait))
            self.metrics.corrections.inc()

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
                linked_views = list((await self._views(tids, batch)).values())
                specs, _ = incident_specs(current, [], linked_views, ce_id)
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

    # -- store -----------------------------------------------------------------------

    def _notification(
        self, s: Spec, customer: Customer | None, texts: dict[str, IncidentText], now: datetime
    ) -> Notification:
        language = (customer.language if customer else None) or s.language
        rendered = render(
            self.templates,
            s.template,
            language,
            ticket_ref=s.ticket_id,
            expected_s=s.expected_s,
            wait=s.wait,
            incident=texts.get(s.incident_id) if s.incident_id else None,
            notices=[texts[i] for i in s.notices if i in texts],
            anti_phishing_code=customer.anti_phishing_code if customer else None,
        )
        return notification_of_spec(s, rendered, now)

    async def _record(self, batch: Batch, now: datetime) -> list[OutboundEvent]:
        if not batch.specs and not batch.links:
            return []
        customers = await self.stores.customers.get(s.customer_id for s in batch.specs)
        wanted = {s.incident_id for s in batch.specs if s.incident_id}
        wanted |= {iid for s in batch.specs for iid in s.notices}
        incidents = await self.stores.incidents.get_many(wanted)
        texts = {i: IncidentText(inc.title, inc.body) for i, inc in incidents.items()}
        made = [
            self._notification(s, customers.get(s.customer_id), texts, now) for s in batch.specs
        ]
        # An acknowledgement that mentions an incident stands for that incident's update.
        by_id = {n.notification_id: n for n in made}
        merged: dict[str, str] = {}
        merged_ones = []
        for s in batch.specs:
            for iid in s.notices:
                nid = notification_id(s.ticket_id, f"incident:{iid}:open")
                merged[nid] = s.notification_id
                merged_ones.append(
                    replace(
                        by_id[s.notification_id],
                        notification_id=nid,
                        cause=f"incident:{iid}:open",
                        template="incident_update",
                        incident_id=iid,
                        text="",
                        status="merged",
                        merged_into=s.notification_id,
                        position=None,
                        expected_s=None,
                    )
                )
        new = await self.stores.outbox.add(made + merged_ones)
        await self.stores.outbox.merge_pending({m: i for m, i in merged.items() if m not in new})
        await self.stores.incidents.link(batch.links, now)
        self.metrics.incident_links.inc(len(set(batch.links)))
        out = []
        for n in made:
            recorded = NotificationRecorded(
                notification_id=n.notification_id,
                ticket_id=n.ticket_id,
                customer_id=n.customer_id,
                channel=n.channel,  # type: ignore[arg-type]
                template=n.template,
                language=n.language,
                status="recorded",
                cause_event_id=n.cause_event_id,
                at=now,
                cause=n.cause,
                incident_id=n.incident_id,
            )
            if n.notification_id in new:
                self.metrics.notifications.labels(n.channel, n.template, "recorded").inc()
                log.info(
                    "notification recorded",
                    extra={"notification_id": n.notification_id, "ticket_id": n.ticket_id},
                )
            # Announced even when already stored: a crash between store and publish must
            # not lose the event; consumers dedupe on the deterministic id.
            out.append(announce(recorded, "recorded"))
        return out
