"""Recording what was decided: each spec rendered into a notification in the outbox, held
by this process's sender when it has one (delivery.py `Held`: no claim write), and the
`recorded` announcement for each.

An acknowledgement that mentions an incident stands for that incident's update: the update
is recorded as merged into it, or — recorded earlier and not sent yet — merged now.
Redelivered input decides the same notification ids, which the outbox already holds; they
are announced again (consumers dedupe on the deterministic event id).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime

from services.notify.decide import Batch, Spec, notification_id
from services.notify.delivery import Held, announcement
from services.notify.metrics import NotifyMetrics
from services.notify.render import IncidentText, Rendered, Templates, render
from services.notify.store import NotifyStores
from services.notify.store.customers import Customer
from services.notify.store.outbox import Notification
from shared.contracts.notifications import (
    NotificationRecorded,
    NotificationStatus,
    notification_event_type,
)
from shared.events import OutboundEvent, make_event
from shared.ids import event_id
from shared.topics import NOTIFICATIONS

log = logging.getLogger(__name__)
SOURCE = "omniroute/notify"


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
        due_at=now,
        position=s.wait.position if s.wait else None,
        expected_s=s.wait.expected_s if s.wait else s.expected_s,
    )


def merged_updates(specs: list[Spec], made: dict[str, Notification]) -> list[Notification]:
    """The incident updates that acknowledgements mentioning them stand for."""
    return [
        replace(
            made[s.notification_id],
            notification_id=notification_id(s.ticket_id, f"incident:{iid}:open"),
            cause=f"incident:{iid}:open",
            template="incident_update",
            incident_id=iid,
            text="",
            status="merged",
            merged_into=s.notification_id,
            due_at=None,
            position=None,
            expected_s=None,
        )
        for s in specs
        for iid in s.notices
    ]


@dataclass
class Recorder:
    stores: NotifyStores
    templates: Templates
    metrics: NotifyMetrics
    held: Held | None = None  # this process's sender; none: recorded pending for a sweeper

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
        n = notification_of_spec(s, rendered, now)
        return self.held.claim(n, now) if self.held else n

    async def record(self, batch: Batch, now: datetime) -> list[OutboundEvent]:
        if not batch.specs and not batch.links:
            return []
        customers = await self.stores.customers.get(s.customer_id for s in batch.specs)
        wanted = {s.incident_id for s in batch.specs if s.incident_id}
        wanted |= {iid for s in batch.specs for iid in s.notices}
        incidents = await self.stores.incidents.get_many(wanted)
        texts = {i: IncidentText(inc.title, inc.body) for i, inc in incidents.items()}
        made = {
            s.notification_id: self._notification(s, customers.get(s.customer_id), texts, now)
            for s in batch.specs
        }
        merged = merged_updates(batch.specs, made)
        new = await self.stores.outbox.add([*made.values(), *merged])
        if self.held:
            self.held.take(n for nid, n in made.items() if nid in new)
        earlier = {m.notification_id: m.merged_into or "" for m in merged}
        earlier = {nid: into for nid, into in earlier.items() if nid not in new}
        if earlier:
            withdrawn = self.held.withdraw(earlier) if self.held else set()
            claim_id = self.held.claim_id if self.held else ""
            await self.stores.outbox.merge(earlier, withdrawn, claim_id)
        await self.stores.incidents.link(batch.links, now)
        self.metrics.incident_links.inc(len(set(batch.links)))
        for nid in new & set(made):
            n = made[nid]
            self.metrics.notifications.labels(n.channel, n.template, "recorded").inc()
            log.info(
                "notification recorded",
                extra={"notification_id": n.notification_id, "ticket_id": n.ticket_id},
            )
        # Announced even when already stored: a crash between store and publish must not
        # lose the event; consumers dedupe on the deterministic id.
        return [announce(announcement(n, "recorded", now), "recorded") for n in made.values()]
