"""Router's Kafka edge and clock: a batch of messages / agent / SLA events in, or the clock's
tick; state stored (outbox first); ticket events out. One lock: ticks and batches never
interleave, so every decision sees one consistent state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from faststream.kafka import KafkaBroker
from pydantic import ValidationError

from services.router.engine import Changes, RouterState
from services.router.metrics import RouterMetrics
from services.router.store import RouterStore
from shared.contracts.agents import (
    AGENT_ACTION_TAKEN,
    AGENT_PRESENCE_CHANGED,
    AGENT_PROFILE_UPDATED,
    AgentActionTaken,
    AgentPresenceChanged,
    AgentProfileUpdated,
)
from shared.contracts.messages import MESSAGE_RECEIVED, MessageReceived
from shared.contracts.sla import SlaEvent
from shared.contracts.tickets import TicketEvent, ticket_event_type
from shared.deadletter import dead_letter
from shared.events import NotACloudEvent, OutboundEvent, envelope_of, make_event, publish_all
from shared.ids import event_id
from shared.lease import Lease
from shared.topics import TICKETS

log = logging.getLogger(__name__)
SOURCE = "omniroute/router"


def _kind(ce_type: str) -> str:
    """The kind of a known type (`omniroute.message.received.v1` -> message), for reasons."""
    parts = ce_type.split(".")
    return parts[1] if len(parts) > 2 else "input"


def ticket_event(ev: TicketEvent) -> OutboundEvent:
    return make_event(
        ev,
        topic=TICKETS,
        event_type=ticket_event_type(ev.event),
        event_id=event_id("ticket", ev.ticket_id, str(ev.sequence)),
        source=SOURCE,
        key=ev.ticket_id,
        time=ev.at,
        subject=ev.ticket_id,
    )


@dataclass
class RouterEngine:
    """Applies inputs to the in-memory state and makes the effects durable."""

    state: RouterState
    store: RouterStore
    broker: KafkaBroker
    metrics: RouterMetrics
    lease: Lease | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    loaded: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _batch_agent_events: list[str] = field(default_factory=list)
    _reload: bool = False

    async def load(self) -> None:
        """(Re)build the state from MongoDB: at start and on every lease takeover."""
        self.loaded = False
        self.state = RouterState(policy=self.state.policy)
        pending = await self.store.load(self.state, self.clock() - timedelta(days=8))
        if pending:
            await publish_all(self.broker, pending)
            await self.store.clear_outbox(pending)
        fixed = self.state.reconcile_loads()
        if fixed:
            # Loads follow the tickets (e.g. documents written before transactions were used).
            log.warning("agent loads corrected", extra={"agents": sorted(fixed)})
            await self.store.save([], fixed.values(), [], [], self.state.position)
        self.loaded = True
        self.metrics.observe_state(self.state, self.clock())

    def _apply(self, record: Any, now: datetime) -> Changes | OutboundEvent:
        """One input record applied, or its dead letter.

        Poison, each dead-lettered with its reason: a record without `ce_type` or `ce_id`,
        a type the router does not consume (every type on its topics is in the contract:
        one it does not know is parked where people look, not dropped), data that fails
        its type's model, and an event the decision raises on. A decision that raises may
        have changed memory halfway, so the state is reloaded after the batch is stored.
        """
        value = record.value or b""
        try:
            env = envelope_of(record)
        except NotACloudEvent as exc:
            return self._dead(exc.reason, None, value, now, record)
        try:
            if env.type == MESSAGE_RECEIVED:
                message = MessageReceived.model_validate_json(value)
                return self.state.on_message(message, now, defer=True)
            if env.type == AGENT_PROFILE_UPDATED:
                ev = AgentProfileUpdated.model_validate_json(value)
                self._batch_agent_events.append(env.id)
                return self.state.on_profile(ev, env.id, now)
            if env.type == AGENT_PRESENCE_CHANGED:
                pev = AgentPresenceChanged.model_validate_json(value)
                self._batch_agent_events.append(env.id)
                return self.state.on_presence(pev, env.id, now)
            if env.type == AGENT_ACTION_TAKEN:
                aev = AgentActionTaken.model_validate_json(value)
                self._batch_agent_events.append(env.id)
                return self.state.on_action(aev, env.id, now)
            if env.type.startswith("omniroute.sla."):
                sev = SlaEvent.model_validate_json(value)
                return self.state.on_sla(sev, now)
        except ValidationError as exc:
            return self._dead(
                f"invalid {_kind(env.type)} event",
                f"{exc.error_count()} errors",
                value,
                now,
                record,
            )
        except Exception as exc:
            log.exception("decision failed", extra={"ce_type": env.type, "ce_id": env.id})
            self._reload = True
            return self._dead(
                f"unprocessable {_kind(env.type)} event", type(exc).__name__, value, now, record
            )
        return self._dead("unknown event type", None, value, now, record)

    def _dead(
        self, reason: str, detail: str | None, value: bytes, now: datetime, record: Any
    ) -> OutboundEvent:
        self.metrics.deadletters.inc()
        return dead_letter(
            service="router", reason=reason, detail=detail, payload=value, now=now, record=record
        )

    async def process(self, records: Sequence[Any]) -> int:
        async with self.lock:
            if not self.loaded:
                await self.load()
            try:
                return await self._process(records)
            except BaseException:
                # The batch changed memory but maybe not MongoDB: the batch will be redelivered
                # (NACK) and must be applied to the stored state, not skipped as already seen.
                self.loaded = False
                raise

    def due(self) -> bool:
        """Whether the clock has something to fire (cheap: the top of the timer heap)."""
        at = self.state.next_due()
        return self.loaded and at is not None and at <= self.clock()

    async def tick(self) -> int:
        """Fire due offers and requeues through the same path as inputs: store, then publish.

        Event ids are the ticket's (id, sequence): a tick repeated after a crash before the
        store decides again from the stored state and publishes the same ids.
        """
        async with self.lock:
            if not self.loaded:
                await self.load()
            try:
                now = self.clock()
                changes = self.state.tick(now)
                if not changes:
                    return 0
                return await self._commit(changes, [], now)
            except BaseException:
                self.loaded = False  # fired in memory only: reload and fire again
                raise

    async def _process(self, records: Sequence[Any]) -> int:
        now = self.clock()
        changes = Changes()
        extra: list[OutboundEvent] = []
        self._batch_agent_events = []
        self._reload = False
        for record in records:
            result = self._apply(record, now)
            if isinstance(result, OutboundEvent):
                extra.append(result)
            else:
                changes.merge(result)
        changes.merge(self.state.route_deferred(now))
        count = await self._commit(changes, extra, now)
        if self._reload:
            self.loaded = False  # what the failed decision left in memory is not stored
        return count

    async def _commit(self, changes: Changes, extra: list[OutboundEvent], now: datetime) -> int:
        events = [ticket_event(e) for e in changes.events] + extra
        if self.lease is not None:
            self.lease.check()  # a replica that lost its lease must not write
        await self.store.save(
            changes.tickets.values(),
            changes.agents.values(),
            self._batch_agent_events,
            events,
            self.state.position,
            changes.outcomes,
        )
        self._batch_agent_events = []
        await publish_all(self.broker, events)
        await self.store.clear_outbox(events)
        self.metrics.observe(changes, self.state, now)
        return len(events)
