"""Notify's Kafka edge: messages, ticket, SLA and incident events in; notifications recorded.

One batch: parse; remember routes and facts (messages); fold ticket events into notify's
ticket view and decide what the customer is told (decide.py); render (render.py); store
the notifications (the outbox — the sender loop delivers them), then the views; return
the `recorded` announcements and dead letters for the edge to publish. Redelivered input
decides the same notification ids, which the outbox already holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from services.notify.decide import (
    Batch,
    Facts,
    Spec,
    expected_first_response_s,
    incident_specs,
    new_estimate_after_breach_s,
    notices_for,
    notification_id,
    on_sla_event,
    on_ticket_event,
    queued_ahead,
)
from services.notify.metrics import NotifyMetrics
from services.notify.render import IncidentText, Templates, render
from services.notify.route import route_updates
from services.notify.store import NotifyStore, notification_doc
from services.sla.deadlines import SlaPolicy
from shared.consume import Contracts, Decoder
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
from shared.topics import NOTIFICATIONS

log = logging.getLogger(__name__)
SOURCE = "omniroute/notify"

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
        "omniroute.ticket.": TicketEvent,
        "omniroute.sla.": SlaEvent,
        **dict.fromkeys(INCIDENT_EVENT_TYPES, Incident),
    }
)


@dataclass
class Inputs:
    messages: list[MessageReceived] = field(default_factory=list)
    tickets: list[tuple[TicketEvent, str]] = field(default_factory=list)
    sla: list[tuple[SlaEvent, str]] = field(default_factory=list)
    incidents: list[tuple[Incident, str]] = field(default_factory=list)
    dead: list[OutboundEvent] = field(default_factory=list)


@dataclass
class Notifier:
    store: NotifyStore
    templates: Templates
    sla_policy: SlaPolicy
    metrics: NotifyMetrics
    queue_seconds_per_ticket: float = 60.0
    retention_s: float = 90 * 86400
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def _parse(self, records: Sequence[Any], now: datetime) -> Inputs:
        """The batch's events by kind, and dead letters for the records that are not one.

        Poison (the consumer kit's rules): a record without `ce_type` or `ce_id`, a type
        notify does not consume (its topics carry only the contract's types: an unknown
        one is parked with its reason, not dropped), and data that fails its type's model.
        """
        decoder = Decoder(
            "notify", INPUTS, on_dead=lambda reason: self.metrics.deadletters.labels(reason).inc()
        )
        batch = decoder.decode(records, now)
        got = Inputs(dead=batch.dead)
        for item in batch.events:
            ev = item.event
            if isinstance(ev, MessageReceived):
                got.messages.append(ev)
            elif isinstance(ev, TicketEvent):
                got.tickets.append((ev, item.ce_id))
            elif isinstance(ev, SlaEvent):
                got.sla.append((ev, item.ce_id))
            elif isinstance(ev, Incident):
                got.incidents.append((ev, item.ce_id))
        return got

    async def process(self, records: Sequence[Any]) -> list[OutboundEvent]:
        now = self.clock()
        got = self._parse(records, now)
        # Routes first: a ticket event in the same batch then finds its conversation's facts.
        await self.store.save_routes(route_updates(got.messages, now, self.retention_s))
        batch = Batch()
        await self._on_tickets(got.tickets, batch)
        await self._on_sla(got.sla, batch)
        await self._on_incidents(got.incidents, batch)
        out = await self._record(batch, now)
        # Views after notifications: a crash in between re-decides the same ids.
        await self.store.save_views(batch.views.values(), now)
        return got.dead + out

    # -- decide ----------------------------------------------------------------------

    async def _on_tickets(self, tickets: list[tuple[TicketEvent, str]], batch: Batch) -> None:
        if not tickets:
            return
        views = await self.store.get_views(ev.ticket_id for ev, _ in tickets)
        acks: list[Spec] = []
        for ev, ce_id in tickets:
            view, specs = on_ticket_event(views.get(ev.ticket_id), ev, ce_id)
            views[ev.ticket_id] = batch.views[ev.ticket_id] = view
            for s in specs:
                (acks if s.cause == "acknowledgement" else batch.specs).append(s)
        if not acks:
            return
        queued = await self.store.queued_counts()
        incidents = await self.store.open_incidents()
        facts = await self.store.get_facts(s.conversation_id for s in acks) if incidents else {}
        for s in acks:
            target = self.sla_policy.target(s.priority, s.channel, "first_response")
            ahead = queued_ahead(queued, s.priority)
            category = views[s.ticket_id].category
            notices = notices_for(incidents, category, facts.get(s.conversation_id or "", Facts()))
            batch.specs.append(
                replace(
                    s,
                    expected_s=expected_first_response_s(
                        target, ahead, self.queue_seconds_per_ticket
                    ),
                    notices=notices,
                )
            )
            batch.links += [(iid, s.ticket_id) for iid in notices]

    async def _on_sla(self, events: list[tuple[SlaEvent, str]], batch: Batch) -> None:
        breached = [(ev, ce_id) for ev, ce_id in events if ev.event == "breached"]
        if not breached:
            return
        views = await self.store.get_views(ev.ticket_id for ev, _ in breached)
        views.update(batch.views)
        queued = await self.store.queued_counts()
        for ev, ce_id in breached:
            spec = on_sla_event(views.get(ev.ticket_id), ev, ce_id)
            if spec is None:
                continue
            ahead = queued_ahead(queued, spec.priority)
            estimate = new_estimate_after_breach_s(
                ev.target_s, ahead, self.queue_seconds_per_ticket
            )
            batch.specs.append(replace(spec, expected_s=estimate))

    async def _on_incidents(self, events: list[tuple[Incident, str]], batch: Batch) -> None:
        for incident, ce_id in sorted(events, key=lambda e: e[0].version):
            # A stale event (an older version redelivered) acts as the newest version.
            current = await self.store.apply_incident(incident)
            if current.open:
                views = await self.store.open_views(current.affected.categories)
                facts = await self.store.get_facts(v.conversation_id for v in views)
                pairs = [(v, facts.get(v.conversation_id or "", Facts())) for v in views]
                specs, linked = incident_specs(current, pairs, [], ce_id)
                batch.links += [(current.incident_id, tid) for tid in linked]
            else:
                views = await self.store.linked_views(current.incident_id)
                specs, _ = incident_specs(current, [], views, ce_id)
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

    async def _record(self, batch: Batch, now: datetime) -> list[OutboundEvent]:
        if not batch.specs and not batch.links:
            return []
        codes = await self.store.anti_phishing_codes(s.customer_id for s in batch.specs)
        wanted = {s.incident_id for s in batch.specs if s.incident_id}
        wanted |= {iid for s in batch.specs for iid in s.notices}
        incidents = await self.store.get_incidents(wanted)
        texts = {i: IncidentText(inc.title, inc.body) for i, inc in incidents.items()}
        docs = []
        for s in batch.specs:
            rendered = render(
                self.templates,
                s.template,
                s.language,
                ticket_ref=s.ticket_id,
                expected_s=s.expected_s,
                incident=texts.get(s.incident_id) if s.incident_id else None,
                notices=[texts[i] for i in s.notices if i in texts],
                anti_phishing_code=codes.get(s.customer_id),
            )
            docs.append(notification_doc(s, rendered, now))
        # An acknowledgement that mentions an incident stands for that incident's update.
        by_id = {d["_id"]: d for d in docs}
        merged: dict[str, str] = {}
        merged_docs = []
        for s in batch.specs:
            for iid in s.notices:
                nid = notification_id(s.ticket_id, f"incident:{iid}:open")
                merged[nid] = s.notification_id
                merged_docs.append(
                    {
                        **by_id[s.notification_id],
                        "_id": nid,
                        "cause": f"incident:{iid}:open",
                        "template": "incident_update",
                        "incident_id": iid,
                        "text": "",
                        "status": "merged",
                        "merged_into": s.notification_id,
                    }
                )
        new = await self.store.add_notifications(docs + merged_docs)
        await self.store.merge_pending([m for m in merged if m not in new], merged)
        await self.store.add_links(batch.links, now)
        self.metrics.incident_links.inc(len(set(batch.links)))
        out = []
        for d in docs:
            n = NotificationRecorded(
                notification_id=d["_id"],
                ticket_id=d["ticket_id"],
                customer_id=d["customer_id"],
                channel=d["channel"],
                template=d["template"],
                language=d["language"],
                status="recorded",
                cause_event_id=d["cause_event_id"],
                at=now,
                cause=d["cause"],
                incident_id=d["incident_id"],
            )
            if d["_id"] in new:
                self.metrics.notifications.labels(d["channel"], d["template"], "recorded").inc()
                log.info(
                    "notification recorded",
                    extra={"notification_id": d["_id"], "ticket_id": d["ticket_id"]},
                )
            # Announced even when already stored: a crash between store and publish must
            # not lose the event; consumers dedupe on the deterministic id.
            out.append(announce(n, "recorded"))
        return out
