"""SLA's Kafka edge and its clock: ticket events in, timer events out; due timers fired."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from faststream.kafka import KafkaBroker
from pydantic import ValidationError

from services.sla.deadlines import SlaState
from services.sla.metrics import SlaMetrics
from services.sla.store import SlaStore
from shared.contracts.sla import SlaEvent, sla_event_type
from shared.contracts.tickets import TicketEvent
from shared.deadletter import dead_letter
from shared.events import OutboundEvent, header, make_event, publish_all
from shared.ids import event_id
from shared.lease import Lease
from shared.topics import SLA

log = logging.getLogger(__name__)
SOURCE = "omniroute/sla"


def sla_event(ev: SlaEvent) -> OutboundEvent:
    return make_event(
        ev,
        topic=SLA,
        event_type=sla_event_type(ev.event),
        # One id per (timer, what happened): a re-fire after a crash is the same event.
        event_id=event_id("sla", ev.timer_id, ev.event, ev.due_at.isoformat()),
        source=SOURCE,
        key=ev.ticket_id,
        time=ev.at,
        subject=ev.ticket_id,
    )


@dataclass
class SlaEngine:
    state: SlaState
    store: SlaStore
    broker: KafkaBroker
    metrics: SlaMetrics
    lease: Lease | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    loaded: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def load(self) -> None:
        """(Re)build the timers from MongoDB: at start, on takeover, after a failed batch."""
        self.loaded = False
        self.state = SlaState(policy=self.state.policy)
        await self.store.load(self.state)
        self.loaded = True

    async def process(self, records: Sequence[Any]) -> int:
        async with self.lock:
            if not self.loaded:
                await self.load()
            try:
                return await self._process(records)
            except BaseException:
                # Memory may be ahead of MongoDB: reload before the redelivered batch.
                self.loaded = False
                raise

    async def _process(self, records: Sequence[Any]) -> int:
        now = self.clock()
        events: list[OutboundEvent] = []
        changed: set[str] = set()
        progress: dict[str, int] = {}
        for record in records:
            value = record.value or b""
            ce_type = header(record.headers or [], "ce_type") or ""
            if not ce_type.startswith("omniroute.ticket."):
                events.append(
                    dead_letter(
                        service="sla",
                        reason="unknown event type",
                        payload=value,
                        now=now,
                        record=record,
                    )
                )
                continue
            try:
                ev = TicketEvent.model_validate_json(value)
            except ValidationError as exc:
                events.append(
                    dead_letter(
                        service="sla",
                        reason="invalid ticket event",
                        detail=f"{exc.error_count()} errors",
                        payload=value,
                        now=now,
                        record=record,
                    )
                )
                continue
            out, ids = self.state.on_ticket(ev, now)
            if ids or out:
                progress[ev.ticket_id] = self.state.applied_seq[ev.ticket_id]
            changed |= ids
            events += [sla_event(e) for e in out]
            self.metrics.observe(out)
        if self.lease is not None:
            self.lease.check()  # a replica that lost its lease must not write
        await self.store.save([self.state.timers[i] for i in changed], progress)
        await publish_all(self.broker, events)
        self.metrics.observe_state(self.state)
        return len(events)

    async def tick(self) -> int:
        """Fire what is due: publish first, then store, so a crash re-fires the same ids."""
        async with self.lock:
            if not self.loaded:
                await self.load()
            now = self.clock()
            fired, changed = self.state.fire_due(now)
            if not fired:
                return 0
            try:
                await publish_all(self.broker, [sla_event(e) for e in fired])
                await self.store.save([self.state.timers[i] for i in changed], {})
            except BaseException:
                self.loaded = False  # fired in memory only: reload and fire again
                raise
            self.metrics.observe(fired, lag_from=now)
            return len(fired)
