"""The stages of ingest's batch, each a function: raw payloads from the inbound topics,
parsed (a bad one becomes a dead letter with the reason), classified as one batch, and
the events that leave: messages and customers' records."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.ingest.classify import Classification, ClassifyPolicy, ToClassify, classify_many
from services.ingest.customers import CustomerRef, customer_updated
from services.ingest.metrics import IngestMetrics
from services.ingest.model import ParseError, Skipped
from services.ingest.pipeline import IngestPolicy, Prepared, prepare
from services.ingest.textmodel import TextModel
from shared.contracts.common import Channel
from shared.contracts.customers import CUSTOMER_UPDATED
from shared.contracts.messages import MESSAGE_RECEIVED, MessageReceived
from shared.events import OutboundEvent, header, make_event
from shared.topics import CHANNEL_BY_INBOUND, CUSTOMERS, MESSAGES

log = logging.getLogger(__name__)
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


Dead = Callable[[Inbound, str], OutboundEvent]


async def parse_all(
    batch: Sequence[Inbound],
    policy: IngestPolicy,
    limits: Mapping[Channel, int],
    metrics: IngestMetrics,
    dead: Dead,
) -> tuple[list[tuple[Inbound, Prepared]], list[OutboundEvent]]:
    """Each payload parsed into its messages; the ones that cannot be, dead letters."""
    ready: list[tuple[Inbound, Prepared]] = []
    out: list[OutboundEvent] = []
    resumed = time.perf_counter()
    for item in batch:
        if time.perf_counter() - resumed > YIELD_AFTER_S:
            # The consumer's heartbeats run on this event loop: a batch of large or
            # broken payloads must not keep them waiting until the group evicts us.
            await asyncio.sleep(0)
            resumed = time.perf_counter()
        if len(item.raw) > limits[item.channel]:
            out.append(dead(item, "payload too large"))
            continue
        started = time.perf_counter()
        try:
            results = prepare(item.channel, item.provider, item.raw, policy.parser)
        except ParseError as exc:
            out.append(dead(item, exc.reason))
            continue
        except Exception as exc:  # a parser bug must not stop the consumer
            log.exception("parser failed", extra={"channel": item.channel})
            out.append(dead(item, f"internal: {type(exc).__name__}"))
            continue
        finally:
            metrics.parse_seconds.labels(item.channel).observe(time.perf_counter() - started)
        for result in results:
            if isinstance(result, Skipped):
                metrics.messages.labels(item.channel, item.provider or "unknown", "skipped").inc()
            else:
                ready.append((item, result))
    return ready, out


def classify_batch(
    items: Sequence[ToClassify], model: TextModel, rules: ClassifyPolicy, metrics: IngestMetrics
) -> list[Classification | None]:
    """One vectorisation for the batch; if it fails, each alone (None: that one failed)."""
    started = time.perf_counter()
    try:
        return list(classify_many(items, model, rules))
    except Exception:
        log.exception("batch classification failed; classifying one by one")
        out: list[Classification | None] = []
        for item in items:
            try:
                out.append(classify_many([item], model, rules)[0])
            except Exception:
                out.append(None)
        return out
    finally:
        metrics.classify_seconds.observe(time.perf_counter() - started)


def message_event(message: MessageReceived, now: datetime) -> OutboundEvent:
    return make_event(
        message,
        topic=MESSAGES,
        event_type=MESSAGE_RECEIVED,
        event_id=message.message_id,
        source=SOURCE,
        key=message.conversation_id,
        time=now,
        subject=message.message_id,
    )


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
