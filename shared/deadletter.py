"""Build dead-letter events: the reason, where it came from, and the payload made safe."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from shared.contracts.deadletter import DEAD_LETTERED, MAX_PAYLOAD_CHARS, DeadLettered
from shared.events import OutboundEvent, make_event
from shared.ids import event_id
from shared.topics import DEADLETTER

Scrub = Callable[[str], str]
# Longest secret `scrub` must see whole (a seed phrase written out, escaped or encoded).
SCRUB_MARGIN_CHARS = 4096
MAX_KEY_CHARS = 256


def dead_letter(
    *,
    service: str,
    reason: str,
    payload: bytes,
    now: datetime,
    scrub: Scrub | None = None,
    record: Any = None,
    provider: str | None = None,
    detail: str | None = None,
) -> OutboundEvent:
    """A dead letter for `payload`; `record` is the aiokafka ConsumerRecord when there is one.

    The id derives from the source position (or the payload), so re-processing the same
    poison record dead-letters it under the same id.
    """
    # Only the start of the payload is read: a window a little longer than what is kept,
    # so a secret that starts in the kept part ends inside it. Decoding and scrubbing a
    # whole multi-megabyte payload takes seconds to minutes, long enough for the consumer
    # to miss its heartbeats, lose its partitions and meet the same record again.
    window = MAX_PAYLOAD_CHARS + SCRUB_MARGIN_CHARS
    head = payload[: window * 4].decode("utf-8", "replace")  # UTF-8: at most 4 bytes a char
    truncated = len(head) > window or len(payload) > window * 4
    text = head[:window]
    if scrub is not None:
        # Before truncating: a secret cut at the limit would no longer be recognised.
        text = scrub(text)
    truncated = truncated or len(text) > MAX_PAYLOAD_CHARS
    text = text[:MAX_PAYLOAD_CHARS]
    topic = getattr(record, "topic", None)
    partition = getattr(record, "partition", None)
    offset = getattr(record, "offset", None)
    raw_key = getattr(record, "key", None)
    key = (
        raw_key[: MAX_KEY_CHARS * 4].decode("utf-8", "replace")
        if isinstance(raw_key, bytes)
        else raw_key
    )
    # The source's key and provider header are whatever its producer wrote: kept short,
    # so the dead letter itself always fits in a Kafka record.
    key = key[:MAX_KEY_CHARS] if key is not None else None
    provider = provider[:MAX_KEY_CHARS] if provider is not None else None
    if topic is not None:
        eid = event_id("deadletter", service, topic, str(partition), str(offset))
    else:
        eid = event_id("deadletter", service, reason, text)
    data = DeadLettered(
        reason=reason,
        detail=detail,
        service=service,
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        provider=provider,
        key=key,
        payload=text,
        payload_truncated=truncated,
        at=now,
    )
    return make_event(
        data,
        topic=DEADLETTER,
        event_type=DEAD_LETTERED,
        event_id=eid,
        source=f"omniroute/{service}",
        key=key,
        time=now,
    )
