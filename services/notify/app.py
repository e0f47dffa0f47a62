"""Notify's composition root."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import httpx
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient

from services.notify.delivery import Delivery, DeliveryConfig, Held
from services.notify.erasure import NotifyErasure
from services.notify.estimate import load_policy
from services.notify.handlers import Notifier, announce
from services.notify.http import make_routes
from services.notify.metrics import NotifyMetrics
from services.notify.outbox import RateRule
from services.notify.render import load_templates
from services.notify.senders import SmtpTransport, Transports
from services.notify.store import NotifyStores, mongo_stores
from shared.access import Access, AccessMetrics
from shared.asyncapi import Records, declare_sends
from shared.audit import AuditLog, MongoAuditLog
from shared.broker import batch_subscriber, ensure_topics, make_broker
from shared.contracts.customers import CustomerUpdated
from shared.contracts.erasures import ErasureEvent
from shared.contracts.incidents import Incident
from shared.contracts.messages import MessageReceived
from shared.contracts.sla import SlaEvent
from shared.contracts.tickets import TicketEvent
from shared.events import OutboundEvent, publish_all
from shared.logging import configure_logging
from shared.mongo import Document, StoreBackoff, make_mongo_client, ping
from shared.retention import Sweeper, load_retention
from shared.service import Readiness, ServiceApp, broker_check, health_routes, make_registry
from shared.settings import NotifySettings
from shared.topics import (
    CUSTOMERS,
    DEADLETTER,
    ERASURES,
    INCIDENTS,
    MESSAGES,
    NOTIFICATIONS,
    SLA,
    TICKETS,
)

GROUP_ID = "omniroute-notify"
ERASURE_GROUP_ID = "omniroute-notify-erasures"


def make_transports(settings: NotifySettings, client: httpx.AsyncClient) -> Transports:
    smtp = None
    if settings.notify_smtp_host:
        smtp = SmtpTransport(
            host=settings.notify_smtp_host,
            port=settings.notify_smtp_port,
            from_addr=settings.notify_smtp_from,
            starttls=settings.notify_smtp_starttls,
            timeout_s=settings.notify_smtp_timeout_s,
            username=settings.notify_smtp_username,
            password=settings.notify_smtp_password,
        )
    return Transports(
        smtp=smtp,
        urls=settings.notify_webhook_urls,
        secrets=settings.webhook_secrets,
        client=client,
        log_unrouted=settings.notify_log_unrouted,
    )


def delivery_config(settings: NotifySettings) -> DeliveryConfig:
    return DeliveryConfig(
        retry_base_s=settings.notify_retry_base_s,
        retry_max_s=settings.notify_retry_max_s,
        max_attempts=settings.notify_max_attempts,
        lease_s=settings.notify_claim_lease_s,
        batch_size=settings.notify_batch_size,
        concurrency=settings.notify_send_concurrency,
        route_wait_s=settings.notify_route_wait_s,
        rate=RateRule(settings.notify_rate_limit_count, settings.notify_rate_limit_window_s),
        poll_interval_s=settings.notify_poll_interval_s,
        metrics_interval_s=settings.notify_metrics_interval_s,
        sweep_interval_s=settings.notify_sweep_interval_s,
    )


def build_app(
    settings: NotifySettings | None = None,
    *,
    broker: KafkaBroker | None = None,
    mongo: AsyncMongoClient[Document] | None = None,
    registry: CollectorRegistry | None = None,
    stores: NotifyStores | None = None,
    http_client: httpx.AsyncClient | None = None,
    start_sender: bool = True,
    audit: AuditLog | None = None,
) -> ServiceApp:
    settings = settings or NotifySettings()
    registry = registry or make_registry("notify")
    broker = broker or make_broker(settings, registry)
    mongo = mongo or make_mongo_client(settings)
    db = mongo[settings.mongo_db]
    retention_s = settings.notify_retention_days * 86400.0
    policy = load_policy(settings.policy_dir / "notify.yaml").estimate
    stores = stores or mongo_stores(db, retention_s, keep=policy.samples)
    metrics = NotifyMetrics.create(registry)
    access = Access.create(
        settings,
        audit or MongoAuditLog(db, settings.api_audit_retention_days),
        AccessMetrics.create("notify", registry),
    )
    backoff = StoreBackoff.create("notify", registry)
    templates = load_templates(settings.policy_dir / "templates.yaml")
    # What this process records, its own sender sends (a process without one claims none).
    held = Held(lease_s=settings.notify_claim_lease_s)
    notifier = Notifier(
        stores=stores,
        templates=templates,
        policy=policy,
        metrics=metrics,
        retention_s=retention_s,
        sla_wait_s=settings.notify_ack_sla_wait_s,
        held=held if start_sender else None,
    )
    client = http_client or httpx.AsyncClient(timeout=settings.notify_webhook_timeout_s)

    async def publish(events: Sequence[OutboundEvent]) -> int:
        return await publish_all(broker, events)

    delivery = Delivery(
        stores=stores,
        transports=make_transports(settings, client),
        publish=publish,
        announce=announce,
        metrics=metrics,
        config=delivery_config(settings),
        sweep=notifier.sweep,
        held=held,
    )

    @batch_subscriber(
        broker,
        settings,
        MESSAGES,
        CUSTOMERS,
        TICKETS,
        SLA,
        INCIDENTS,
        group_id=GROUP_ID,
        description="Messages (routes and customer facts), customers (notify's copy; a"
        " tombstone deletes it), ticket changes, SLA deadlines and breaches, and incidents"
        " that customers are told about",
    )
    async def on_inputs(
        batch: Records[MessageReceived | CustomerUpdated | TicketEvent | SlaEvent | Incident],
    ) -> None:
        # Notifications are stored (the outbox) before the ack policy commits the offsets.
        async with backoff.guard():
            events = await notifier.process(batch)
        await publish_all(broker, events)
        delivery.wake()

    eraser = NotifyErasure(db)
    retention = load_retention(settings.policy_dir / "retention.yaml")
    sweeper = Sweeper("notify", retention, registry, eraser.sweeps(retention))

    @batch_subscriber(
        broker,
        settings,
        ERASURES,
        group_id=ERASURE_GROUP_ID,
        description="Erasure requests (notify erases its notifications, routes and contact"
        " facts of the customer) and legal holds (its retention skips held customers)",
    )
    async def on_erasure(batch: Records[ErasureEvent]) -> None:
        async with backoff.guard():
            events = await eraser.process(batch, datetime.now(UTC))
        await publish_all(broker, events)

    # Notifications and dead letters; the API's incidents; erasure completions.
    declare_sends(broker, NOTIFICATIONS, DEADLETTER, INCIDENTS, ERASURES)

    async def startup() -> None:
        configure_logging("notify", settings.log_level)
        if settings.kafka_create_topics:
            await ensure_topics(settings.kafka_bootstrap)
        await stores.ensure_indexes()
        sweeper.start()

    async def after_startup() -> None:
        if start_sender:
            delivery.start()

    async def shutdown() -> None:
        await delivery.stop()
        await sweeper.stop()
        await client.aclose()
        await mongo.close()

    readiness = Readiness({"kafka": broker_check(broker), "mongodb": lambda: ping(db)})
    if start_sender:
        readiness.checks["sender"] = delivery.check
    return ServiceApp(
        broker,
        routes=[
            *health_routes(registry, readiness),
            *make_routes(settings, broker, stores.incidents, templates, access=access),
        ],
        on_startup=[startup],
        after_startup=[after_startup],
        on_shutdown=[shutdown],
        title="omniroute notify",
    )
