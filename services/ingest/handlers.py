"""Ingest's Kafka edge: a batch of raw provider payloads in, `support.messages` events out."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.ingest.classify import ClassifyRules
from services.ingest.metrics import IngestMetrics
from services.ingest.model import ParseError, Skipped
from services.ingest.pipeline import IngestPolicy, Prepared, finish, prepare
from services.ingest.redact import redact
from services.ingest.store import CustomerStore
from shared.contracts.common import Channel
from shared.contracts.messages import MESSAGE_RECEIVED
from shared.deadletter import dead_letter
from shared.events import OutboundEvent, header, make_event
from shared.topics import CHANNEL_BY_INBOUND, MESSAGES

log = logging.getLogger(__name__)
SOURCE = "omniroute/ingest"


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


def scrub(text: str) -> str:
    return redact(text)[0]


@dataclass
class Ingestor:
    """Turns a batch of inbound payloads into events; never raises for bad input."""

    customers: CustomerStore
    rules: ClassifyRules
    policy: IngestPolicy
    metrics: IngestMetrics
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def _dead(self, item: Inbound, reason: str, now: datetime) -> OutboundEvent:
        self.metrics.messages.labels(item.channel, item.provider or "unknown", "deadletter").inc()
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

    async def process(self, batch: Sequence[Inbound]) -> list[OutboundEvent]:
        now = self.clock()
        out: list[OutboundEvent] = []
        ready: list[tuple[Inbound, Prepared]] = []
        for item in batch:
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
        seen: set[str] = set()
        for (item, prepared), ref in zip(ready, refs, strict=True):
            self.metrics.customers.labels("new" if ref.new else "known").inc()
            if prepared.message_id in seen:
                continue
            seen.add(prepared.message_id)
            try:
                message = finish(prepared, ref, self.rules, self.policy.languages, now)
            except Exception as exc:
                log.exception("classification failed", extra={"channel": item.channel})
                out.append(self._dead(item, f"internal: {type(exc).__name__}", now))
                continue
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
        return out
