"""Ingest's Kafka edge: a batch of raw provider payloads in, `support.messages` events out
(and, for a customer seen for the first time, its record on `support.customers`); agents'
corrections in, training examples stored."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.ingest.classify import ClassifyPolicy
from services.ingest.customers import CustomerRef
from services.ingest.intake import (
    MAX_PAYLOAD_BYTES,
    Inbound,
    classify_batch,
    customers_events,
    message_event,
    parse_all,
)
from services.ingest.metrics import IngestMetrics
from services.ingest.pipeline import IngestPolicy, Prepared, finish, language_of
from services.ingest.redact import scrub
from services.ingest.store import ClassifiedText, Correction, CustomerStore, TrainingStore
from services.ingest.textmodel import TextModel
from shared.consume import Contracts, Decoder
from shared.contracts.common import PROVIDERS_BY_CHANNEL, Channel
from shared.contracts.tickets import TicketEvent, ticket_event_type
from shared.deadletter import dead_letter
from shared.events import OutboundEvent, header

log = logging.getLogger(__name__)
RECATEGORIZED = ticket_event_type("recategorized")


@dataclass
class Ingestor:
    """Turns a batch of inbound payloads into events; never raises for bad input."""

    customers: CustomerStore
    rules: ClassifyPolicy
    model: TextModel
    policy: IngestPolicy
    metrics: IngestMetrics
    texts: TrainingStore
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    max_payload_bytes: Mapping[Channel, int] = field(default_factory=lambda: MAX_PAYLOAD_BYTES)

    async def process(self, batch: Sequence[Inbound]) -> list[OutboundEvent]:
        now = self.clock()

        def dead(item: Inbound, reason: str) -> OutboundEvent:
            return self._dead(item, reason, now)

        parsed, out = await parse_all(
            batch, self.policy, self.max_payload_bytes, self.metrics, dead
        )
        if not parsed:
            return out
        refs = await self.customers.resolve_many([p.parsed.identities for _, p in parsed], now)
        # A customer ingest has just created is announced once (its version 1 record).
        out += customers_events([ref for ref in refs if ref.new], now)
        unique: dict[str, tuple[Inbound, Prepared, CustomerRef]] = {}
        for (item, prepared), ref in zip(parsed, refs, strict=True):
            self.metrics.customers.labels("new" if ref.new else "known").inc()
            unique.setdefault(prepared.message_id, (item, prepared, ref))
        items = [prepared.to_classify() for _, prepared, _ in unique.values()]
        decisions = classify_batch(items, self.model, self.rules, self.metrics)
        kept: list[ClassifiedText] = []
        for (item, prepared, ref), decided in zip(unique.values(), decisions, strict=True):
            try:
                if decided is None:
                    raise RuntimeError("classification failed")
                language = language_of(prepared, ref, self.policy.languages)
                message = finish(prepared, ref, decided, language, now)
            except Exception as exc:
                log.exception("classification failed", extra={"channel": item.channel})
                out.append(dead(item, f"internal: {type(exc).__name__}"))
                continue
            full = prepared.to_classify().full
            kept.append(
                ClassifiedText(
                    message.message_id, full, message.language, message.category, now,
                    customer_id=message.customer_id,
                )
            )  # fmt: skip
            self.metrics.observe_message(message)
            out.append(message_event(message, now))
        # Kept before the offsets are committed, so a correction always finds its text.
        await self.texts.remember(kept)
        return out

    def _dead(self, item: Inbound, reason: str, now: datetime) -> OutboundEvent:
        # The header is whatever the producer wrote: only known providers become label values.
        known = item.provider in PROVIDERS_BY_CHANNEL[item.channel]
        provider = item.provider if known and item.provider else "unknown"
        self.metrics.messages.labels(item.channel, provider, "deadletter").inc()
        self.metrics.deadletters.labels(reason).inc()
        return dead_letter(
            service="ingest",
            reason=reason,
            payload=item.raw,
            now=now,
            scrub=scrub,
            record=item.record,
            provider=item.provider,
        )


@dataclass
class Teacher:
    """Agents' corrections (`recategorized` ticket events) become training examples."""

    texts: TrainingStore
    metrics: IngestMetrics

    def __post_init__(self) -> None:
        self.decoder = Decoder(
            "ingest",
            Contracts({RECATEGORIZED: TicketEvent}),
            on_dead=lambda reason: self.metrics.deadletters.labels(reason).inc(),
        )

    async def process(self, records: Sequence[Any]) -> list[OutboundEvent]:
        # Every other ticket event is for other consumers (and so is their poison):
        # skipped unread; a malformed correction is dead-lettered by the consumer kit.
        mine = [r for r in records if header(r.headers or [], "ce_type") == RECATEGORIZED]
        batch = self.decoder.decode(mine, datetime.now(UTC))
        corrections: list[Correction] = []
        for item in batch.events:
            ev = item.event
            assert isinstance(ev, TicketEvent)
            if ev.message_id is None:
                self.metrics.training_examples.labels("no_message").inc()
                continue
            corrections.append(
                Correction(ev.ticket_id, ev.message_id, ev.category, ev.agent_id, ev.at)
            )
        stored = await self.texts.learn(corrections)
        self.metrics.training_examples.labels("stored").inc(stored)
        self.metrics.training_examples.labels("text_expired").inc(len(corrections) - stored)
        return batch.dead
