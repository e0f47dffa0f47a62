"""Ingest's Kafka edge: a batch of raw provider payloads in, `support.messages` events out
(and, for a customer seen for the first time, its record on `support.customers`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.ingest.classify import Classification, ClassifyPolicy, classify_many
from services.ingest.customers import CustomerRef, customer_updated
from services.ingest.metrics import IngestMetrics
from services.ingest.model import ParseError, Skipped
from services.ingest.pipeline import IngestPolicy, Prepared, finish, language_of, prepare
from services.ingest.redact import scrub
from services.ingest.store import ClassifiedText, Correction, CustomerStore, TrainingStore
from services.ingest.textmodel import TextModel
from shared.consume import Contracts, Decoder
from shared.contracts.common import PROVIDERS_BY_CHANNEL, Channel
from shared.contracts.customers import CUSTOMER_UPDATED
from shared.contracts.messages import MESSAGE_RECEIVED
from shared.contracts.tickets import TicketEvent, ticket_event_type
from shared.deadletter import dead_letter
from shared.events import OutboundEvent, header, make_event
from shared.topics import CHANNEL_BY_INBOUND, CUSTOMERS, MESSAGES

log = logging.getLogger(__name__)
RECATEGORIZED = ticket_event_type("recategorized")
SOURCE = "omniroute/ingest"
MIB = 1_048_576
YIELD_AFTER_S = 0.2
# Larger payloads are dead-lettered unread ("payload too large"): reading one costs
# several times its size in memory. Chat, social and phone payloads are a provider's
# webhook body, held to the webhooks' own limit (1 MiB); the providers' messages are far
# smaller (a Telegram message is at most 4,096 characters). Mail carries its
# attachments, so it gets what mail servers commonly accept.
MAX_PAYLOAD_BYTES: dict[Channel, int] = {
    "email": 25 * MIB,
    "social": MIB,
    "phone": MIB,
    "chat": MIB,
}


def customers_events(refs: Sequence[CustomerRef], now: datetime) -> list[OutboundEvent]:
    """Each customer's current record for support.customers, keyed by customer id; the
    event id names the version, so a consumer can tell a redelivery from a change."""
    return [
        make_event(
            update,
            topic=CUSTOMERS,
            event_type=CUSTOMER_UPDATED,
            event_id=f"{update.customer_id}@{update.version}",
            source=SOURCE,
            key=update.customer_id,
            time=now,
            subject=update.customer_id,
        )
        for update in (customer_updated(ref, now) for ref in refs)
    ]


@dataclass(frozen=True)
class Inbound:
    """One raw payload as it came off a topic (or a webhook)."""

    channel: Channel
    provider: str | None
    raw: bytes
    record: Any = None


def inbound_from_record(record: Any) -> Inbound:
    channel = CHANNEL_BY_INBOUND[record.topic]
    return Inbound(channel, header(record.headers or [], "provider"), record.value or b"", record)


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

    def _classify(self, batch: Sequence[Prepared]) -> list[Classification | None]:
        """One vectorisation for the batch; if it fails, each alone (None: that one failed)."""
        items = [p.to_classify() for p in batch]
        started = time.perf_counter()
        try:
            return list(classify_many(items, self.model, self.rules))
        except Exception:
            log.exception("batch classification failed; classifying one by one")
            out: list[Classification | None] = []
            for item in items:
                try:
                    out.append(classify_many([item], self.model, self.rules)[0])
                except Exception:
                    out.append(None)
            return out
        finally:
            self.metrics.classify_seconds.observe(time.perf_counter() - started)

    async def process(self, batch: Sequence[Inbound]) -> list[OutboundEvent]:
        now = self.clock()
        out: list[OutboundEvent] = []
        ready: list[tuple[Inbound, Prepared]] = []
        resumed = time.perf_counter()
        for item in batch:
            if time.perf_counter() - resumed > YIELD_AFTER_S:
                # The consumer's heartbeats run on this event loop: a batch of large or
                # broken payloads must not keep them waiting until the group evicts us.
                await asyncio.sleep(0)
                resumed = time.perf_counter()
            if len(item.raw) > self.max_payload_bytes[item.channel]:
                out.append(self._dead(item, "payload too large", now))
                continue
            started = time.perf_counter()
            try:
                results = prepare(item.channel, item.provider, item.raw, self.policy.parser)
            except ParseError as exc:
                out.append(self._dead(item, exc.reason, now))
                continue
            except Exception as exc:  # a parser bug must not stop the consumer
                log.exception("parser failed", extra={"channel": item.channel})
                out.append(self._dead(item, f"internal: {type(exc).__name__}", now))
                continue
            finally:
                self.metrics.parse_seconds.labels(item.channel).observe(
                    time.perf_counter() - started
                )
            for result in results:
                if isinstance(result, Skipped):
                    provider = item.provider or "unknown"
                    self.metrics.messages.labels(item.channel, provider, "skipped").inc()
                else:
                    ready.append((item, result))
        if not ready:
            return out
        refs = await self.customers.resolve_many([p.parsed.identities for _, p in ready], now)
        unique: list[tuple[Inbound, Prepared, CustomerRef]] = []
        seen: set[str] = set()
        # A customer ingest has just created is announced once (its version 1 record).
        out.extend(customers_events([ref for ref in refs if ref.new], now))
        for (item, prepared), ref in zip(ready, refs, strict=True):
            self.metrics.customers.labels("new" if ref.new else "known").inc()
            if prepared.message_id not in seen:
                seen.add(prepared.message_id)
                unique.append((item, prepared, ref))
        classified = self._classify([prepared for _, prepared, _ in unique])
        kept: list[ClassifiedText] = []
        for (item, prepared, ref), decided in zip(unique, classified, strict=True):
            try:
                if decided is None:
                    raise RuntimeError("classification failed")
                language = language_of(prepared, ref, self.policy.languages)
                message = finish(prepared, ref, decided, language, now)
            except Exception as exc:
                log.exception("classification failed", extra={"channel": item.channel})
                out.append(self._dead(item, f"internal: {type(exc).__name__}", now))
                continue
            self.metrics.categories.labels(message.category).inc()
            kept.append(
                ClassifiedText(
                    message.message_id,
                    prepared.to_classify().full,
                    message.language,
                    message.category,
                    now,
                    customer_id=message.customer_id,
                )
            )
            for r in message.redactions:
                self.metrics.redactions.labels(r.kind).inc(r.count)
            self.metrics.messages.labels(message.channel, message.provider, "published").inc()
            out.append(
                make_event(
                    message,
                    topic=MESSAGES,
                    event_type=MESSAGE_RECEIVED,
                    event_id=message.message_id,
                    source=SOURCE,
                    key=message.conversation_id,
                    time=now,
                    subject=message.message_id,
                )
            )
        # Kept before the offsets are committed, so a correction always finds its text.
        await self.texts.remember(kept)
        return out


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
