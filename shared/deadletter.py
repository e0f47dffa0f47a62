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
    text = payload.decode("utf-8", "replace")
    if scrub is not None:
        # Before truncating: a secret cut at the limit would no longer be recognised.
        text = scrub(text)
    truncated = len(text) > MAX_PAYLOAD_CHARS
    text = text[:MAX_PAYLOAD_CHARS]
    topic = getattr(record, "topic", None)
    partition = getattr(record, "partition", None)
    offset = getattr(record, "offset", None)
    raw_key = getattr(record, "key", None)
    key = raw_key.decode("utf-8", "replace") if isinstance(raw_key, bytes) else raw_key
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
