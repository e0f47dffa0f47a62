"""Notify's Kafka edge: ticket events in; one notification per cause stored and announced."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter
from pydantic import ValidationError

from services.notify.render import Templates, acknowledgement_template, render
from services.notify.store import NotificationStore
from shared.contracts.notifications import NOTIFICATION_RECORDED, NotificationRecorded
from shared.contracts.tickets import TicketEvent
from shared.deadletter import dead_letter
from shared.events import OutboundEvent, header, make_event
from shared.ids import stable_id
from shared.mongo import Database
from shared.topics import NOTIFICATIONS

log = logging.getLogger(__name__)
SOURCE = "omniroute/notify"


def notification_id(ticket_id: str, cause: str) -> str:
    return stable_id("ntf", ticket_id, cause)


@dataclass
class Notifier:
    store: NotificationStore
    db: Database
    templates: Templates
    notifications: Counter
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    async def _anti_phishing_codes(self, customer_ids: set[str]) -> dict[str, str]:
        if not customer_ids:
            return {}
        cursor = self.db["customers"].find(
            {"_id": {"$in": sorted(customer_ids)}, "anti_phishing_code": {"$type": "string"}},
            {"anti_phishing_code": 1},
        )
        return {d["_id"]: d["anti_phishing_code"] async for d in cursor}

    async def process(self, records: Sequence[Any]) -> list[OutboundEvent]:
        now = self.clock()
        out: list[OutboundEvent] = []
        causes: list[tuple[TicketEvent, str]] = []
        for record in records:
            ce_type = header(record.headers or [], "ce_type") or ""
            ce_id = header(record.headers or [], "ce_id") or ""
            if not ce_type.startswith("omniroute.ticket."):
                out.append(
                    dead_letter(
                        service="notify",
                        reason="unknown event type",
                        payload=record.value or b"",
                        now=now,
                        record=record,
                    )
                )
                continue
            try:
                ev = TicketEvent.model_validate_json(record.value or b"")
            except ValidationError:
                out.append(
                    dead_letter(
                        service="notify",
                        reason="invalid ticket event",
                        payload=record.value or b"",
                        now=now,
                        record=record,
                    )
                )
                continue
            if ev.event == "opened":
                causes.append((ev, ce_id))
        codes = await self._anti_phishing_codes({ev.customer_id for ev, _ in causes})
        docs = []
        announcements = []
        for ev, ce_id in causes:
            name = acknowledgement_template(ev)
            lang, text = render(
                self.templates,
                name,
                ev.language,
                ticket_ref=ev.ticket_id,
                anti_phishing_code=codes.get(ev.customer_id),
            )
            nid = notification_id(ev.ticket_id, "acknowledgement")
            docs.append(
                {
                    "_id": nid,
                    "ticket_id": ev.ticket_id,
                    "customer_id": ev.customer_id,
                    "channel": ev.channel,
                    "template": name,
                    "language": lang,
                    "text": text,
                    "status": "recorded",
                    "cause_event_id": ce_id,
                    "created_at": now,
                }
            )
            announcements.append(
                NotificationRecorded(
                    notification_id=nid,
                    ticket_id=ev.ticket_id,
                    customer_id=ev.customer_id,
                    channel=ev.channel,
                    template=name,
                    language=lang,
                    status="recorded",
                    cause_event_id=ce_id,
                    at=now,
                )
            )
        new = await self.store.add_new(docs)
        for n in announcements:
            if n.notification_id in new:
                self.notifications.labels(n.channel, n.template, "recorded").inc()
                log.info(
                    "notification recorded",
                    extra={"notification_id": n.notification_id, "ticket_id": n.ticket_id},
                )
            # Published even when already stored: a crash between store and publish must
            # not lose the event; consumers dedupe on the deterministic id.
            out.append(
                make_event(
                    n,
                    topic=NOTIFICATIONS,
                    event_type=NOTIFICATION_RECORDED,
                    event_id=n.notification_id,
                    source=SOURCE,
                    key=n.ticket_id,
                    time=now,
                    subject=n.ticket_id,
                )
            )
        return out
