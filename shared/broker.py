"""Kafka broker factory and topic administration."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, TopicPartition
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.message import StreamMessage
from prometheus_client import CollectorRegistry

from shared.asyncapi import records
from shared.settings import ServiceSettings
from shared.topics import PARTITIONS, TOPIC_CONFIGS

log = logging.getLogger(__name__)


def make_broker(
    settings: ServiceSettings, registry: CollectorRegistry, *, linger_ms: int = 5
) -> KafkaBroker:
    """One broker per process, from settings; connects when the app starts. `linger_ms`:
    how long a record may wait for others to share its batch (0: a latency-bound path)."""
    return KafkaBroker(
        settings.kafka_bootstrap,
        client_id=f"omniroute-{settings.service_name}",
        enable_idempotence=settings.kafka_idempotent_producer,
        acks="all",
        linger_ms=linger_ms,
        middlewares=(
            KafkaPrometheusMiddleware(
                registry=registry, app_name=f"omniroute_{settings.service_name}"
            ),
        ),
        logger=logging.getLogger(f"omniroute.{settings.service_name}.broker"),
        # Per-message "Received/Processed" lines only at DEBUG: volume, not insight.
        log_level=logging.DEBUG,
        parser=tolerant_headers,
        decoder=raw_bodies,
        # Handlers take their batch's records as they are (`shared.asyncapi.records`);
        # their parameter types document the contract and must not validate a batch.
        apply_types=False,
    )


# FastStream reads every record of a batch before the handler runs: it decodes header
# values as strict UTF-8 and `json.loads` the values. One record a producer got wrong
# (a header of Latin-1 bytes, a value that is not JSON or is nested 10,000 deep) then
# fails the whole batch, the batch is redelivered, and the consumer never gets past it.
# The handlers read the records themselves (`records_of`) and dead-letter what they
# cannot read, so the broker hands them the records as they are.


async def tolerant_headers(
    msg: Any, original: Callable[[Any], Awaitable[StreamMessage[Any]]]
) -> StreamMessage[Any]:
    """FastStream's parser, with header values that are not UTF-8 (or null) made readable."""
    if isinstance(msg, tuple | list):
        return await original(tuple(_readable_headers(r) for r in msg))
    return await original(_readable_headers(msg))


def _readable_headers(record: Any) -> Any:
    headers = getattr(record, "headers", None) or ()
    if all(_is_utf8(value) for _, value in headers):
        return record
    return dataclasses.replace(record, headers=[(k, _readable(v)) for k, v in headers])


def _is_utf8(value: object) -> bool:
    if not isinstance(value, bytes):
        return False
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _readable(value: object) -> bytes:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").encode()
    return b"" if value is None else str(value).encode()


async def raw_bodies(msg: StreamMessage[Any]) -> Any:
    """No decoding: the body (a batch's list of values) as bytes."""
    return msg.body


def batch_subscriber(
    broker: KafkaBroker,
    settings: ServiceSettings,
    *topics: str,
    group_id: str,
    description: str,
    partitions: Sequence[TopicPartition] = (),
    batch_timeout_ms: int = 50,
) -> Callable[[Callable[..., Awaitable[None]]], Any]:
    """The one way every service consumes: batches of raw records.

    The handler gets the batch undecoded (`Records`): the consumer kit (shared/consume.py)
    decodes each record, so one poison record is dead-lettered instead of failing the
    batch. Offsets are committed after the handler returns, a failure rewinds the batch
    (NACK), and a new group starts from the earliest record. Workers join a consumer
    group (`topics`); engines assign themselves `partitions` (no group membership).
    """
    return broker.subscriber(
        *topics,
        partitions=list(partitions),
        group_id=group_id,
        batch=True,
        max_records=settings.kafka_max_batch,
        batch_timeout_ms=batch_timeout_ms,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        auto_offset_reset="earliest",
        decoder=records,
        description=description,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        # Group liveness; unused by an engine's assigned partitions.
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
    )


def engine_partitions(*topics: str) -> list[TopicPartition]:
    """Every partition of `topics`, for an engine that reads them all itself.

    An engine is a single writer: the lease decides who consumes, so its input consumer
    takes every partition by manual assignment (offsets still committed under the
    engine's group id) instead of joining a consumer group. A standby then starts reading
    the moment it holds the lease, without waiting for a dead member's session to time
    out (12 s of no routing, measured, with group membership).
    """
    return [TopicPartition(t, p) for t in topics for p in range(PARTITIONS[t])]


async def verify_partitions(bootstrap: str, topics: tuple[str, ...]) -> None:
    """Raise if the broker's partition counts differ from the contract's (PARTITIONS).

    An engine that assigns itself partitions must know them all: a topic with more
    partitions than declared would leave some unread.
    """
    # Bounded: a lost reply must not hold a takeover for aiokafka's default 40 s; the
    # activation fails fast and the host tries again a second later.
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="omniroute-admin", request_timeout_ms=3000
    )
    try:
        async with asyncio.timeout(5):
            await admin.start()
            described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    found = {t["topic"]: len(t.get("partitions") or ()) for t in described}
    wrong = {t: found.get(t) for t in topics if found.get(t) != PARTITIONS[t]}
    if wrong:
        expected = {t: PARTITIONS[t] for t in wrong}
        raise RuntimeError(f"partition counts {wrong} differ from the contract's {expected}")


async def ensure_topics(
    bootstrap: str, partitions: dict[str, int] | None = None, replication: int = 1
) -> list[str]:
    """Create missing topics (Tansu would auto-create them with 4 partitions otherwise)."""
    wanted = partitions or PARTITIONS
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="omniroute-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name=t,
                num_partitions=n,
                replication_factor=replication,
                # Retention per topic, compaction for support.customers (Tansu 0.6 accepts
                # and reports both, checked December 2026).
                topic_configs=dict(TOPIC_CONFIGS.get(t, {})),
            )
            for t, n in wanted.items()
            if t not in existing
        ]
        if missing:
            # Another replica may have created them first.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        created = [t.name for t in missing]
        if created:
            log.info("topics created", extra={"topics": created})
        return created
    finally:
        await admin.close()
