"""Kafka broker factory and topic administration."""

from __future__ import annotations

import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from prometheus_client import CollectorRegistry

from shared.settings import ServiceSettings
from shared.topics import PARTITIONS

log = logging.getLogger(__name__)


def make_broker(settings: ServiceSettings, registry: CollectorRegistry) -> KafkaBroker:
    """One broker per process, from settings; connects when the app starts."""
    return KafkaBroker(
        settings.kafka_bootstrap,
        client_id=f"omniroute-{settings.service_name}",
        enable_idempotence=settings.kafka_idempotent_producer,
        acks="all",
        linger_ms=5,
        middlewares=(
            KafkaPrometheusMiddleware(
                registry=registry, app_name=f"omniroute_{settings.service_name}"
            ),
        ),
        logger=logging.getLogger(f"omniroute.{settings.service_name}.broker"),
        # Per-message "Received/Processed" lines only at DEBUG: volume, not insight.
        log_level=logging.DEBUG,
    )


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
            NewTopic(name=t, num_partitions=n, replication_factor=replication)
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
