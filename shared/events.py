"""CloudEvents 1.0 in Kafka binary content mode: attributes in `ce_*` headers, data as JSON.

Binary mode keeps the Kafka value a plain JSON document (readable by any consumer and
by FastStream's pydantic decoding) and the official `cloudevents` SDK reads it with
`cloudevents.core.bindings.kafka.from_binary_event`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from faststream.kafka import KafkaBroker
from pydantic import BaseModel

SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class OutboundEvent:
    """One record to publish: where, with which key, and the CloudEvent it carries."""

    topic: str
    key: str | None
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.headers["ce_id"]

    @property
    def type(self) -> str:
        return self.headers["ce_type"]


def format_time(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("CloudEvents time must carry a time zone")
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def make_event(
    data: BaseModel,
    *,
    topic: str,
    event_type: str,
    event_id: str,
    source: str,
    key: str | None,
    time: datetime,
    subject: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> OutboundEvent:
    headers = {
        "ce_specversion": SPECVERSION,
        "ce_id": event_id,
        "ce_type": event_type,
        "ce_source": source,
        "ce_time": format_time(time),
        "content-type": CONTENT_TYPE,
    }
    if subject is not None:
        headers["ce_subject"] = subject
    if extra_headers:
        headers.update(extra_headers)
    return OutboundEvent(
        topic=topic, key=key, value=data.model_dump_json().encode(), headers=headers
    )


def header(headers: Iterable[tuple[str, bytes]] | Mapping[str, Any], name: str) -> str | None:
    """A header as text, from aiokafka's list of pairs or FastStream's dict."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    for key, value in items:
        if key.lower() == name:
            if isinstance(value, bytes):
                return value.decode("utf-8", "replace")
            return None if value is None else str(value)  # Kafka headers may be null
    return None


async def send_all(broker: KafkaBroker, events: Iterable[OutboundEvent]) -> list[Any]:
    """Hand every event to the producer without waiting: the futures of their acks.

    Not awaiting each one lets aiokafka batch them; FastStream's in-memory test broker
    delivers at once and returns none.
    """
    futures = []
    for event in events:
        fut = await broker.publish(
            event.value,
            event.topic,
            key=event.key.encode() if event.key is not None else None,
            headers=event.headers,
            no_confirm=True,
        )
        if isinstance(fut, asyncio.Future):
            futures.append(fut)
    return futures


async def publish_all(broker: KafkaBroker, events: Iterable[OutboundEvent]) -> int:
    """Send every event and wait until the broker has all of them.

    The caller commits its input offsets only after this returns.
    """
    events = list(events)
    futures = await send_all(broker, events)
    if futures:
        await asyncio.gather(*futures)
    return len(events)


@dataclass(frozen=True)
class Envelope:
    """What a consumer dispatches on (`ce_type`) and deduplicates on (`ce_id`)."""

    type: str
    id: str


class NotACloudEvent(ValueError):
    """A record without the attributes every consumer needs; `reason` is short and stable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def envelope_of(record: Any) -> Envelope:
    """`ce_type` and `ce_id` of a consumed record; raises NotACloudEvent if either is absent.

    Without a type there is nothing to dispatch on; without an id a consumer that
    deduplicates on it would take every later id-less event for a redelivery.
    """
    headers = record.headers or []
    ce_type = header(headers, "ce_type")
    if not ce_type:
        raise NotACloudEvent("missing ce_type")
    ce_id = header(headers, "ce_id")
    if not ce_id:
        raise NotACloudEvent("missing ce_id")
    return Envelope(ce_type, ce_id)


def records_of(raw_message: Any) -> tuple[Any, ...]:
    """The ConsumerRecords behind a FastStream Kafka message (batch or single)."""
    if isinstance(raw_message, (tuple, list)):
        return tuple(raw_message)
    return (raw_message,)
