"""Notify's composition root."""

from __future__ import annotations

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import CollectorRegistry, Counter
from pymongo import AsyncMongoClient

from services.notify.handlers import Notifier
from services.notify.render import load_templates
from services.notify.store import MongoNotificationStore, NotificationStore
from shared.broker import ensure_topics, make_broker
from shared.events import publish_all, records_of
from shared.logging import configure_logging
from shared.mongo import Document, make_mongo_client, ping
from shared.service import Readiness, ServiceApp, broker_check, health_routes, make_registry
from shared.settings import NotifySettings
from shared.topics import TICKETS

GROUP_ID = "omniroute-notify"


def build_app(
    settings: NotifySettings | None = None,
    *,
    broker: KafkaBroker | None = None,
    mongo: AsyncMongoClient[Document] | None = None,
    registry: CollectorRegistry | None = None,
    store: NotificationStore | None = None,
) -> ServiceApp:
    settings = settings or NotifySettings()
    registry = registry or make_registry("notify")
    broker = broker or make_broker(settings, registry)
    mongo = mongo or make_mongo_client(settings)
    db = mongo[settings.mongo_db]
    store = store or MongoNotificationStore(db)
    notifier = Notifier(
        store=store,
        db=db,
        templates=load_templates(settings.policy_dir / "templates.yaml"),
        notifications=Counter(
            "omniroute_notify_notifications_total",
            "Notifications by channel, template and outcome.",
            ["channel", "template", "outcome"],
            registry=registry,
        ),
    )

    @broker.subscriber(
        TICKETS,
        group_id=GROUP_ID,
        batch=True,
        max_records=settings.kafka_max_batch,
        batch_timeout_ms=50,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        description="Ticket events that customers are told about",
    )
    async def on_ticket_events(msg: KafkaMessage) -> None:
        records = records_of(msg.raw_message)
        await publish_all(broker, await notifier.process(records))

    async def startup() -> None:
        configure_logging("notify", settings.log_level)
        if settings.kafka_create_topics:
            await ensure_topics(settings.kafka_bootstrap)
        await store.ensure_indexes()

    async def shutdown() -> None:
        await mongo.close()

    readiness = Readiness({"kafka": broker_check(broker), "mongodb": lambda: ping(db)})
    return ServiceApp(
        broker,
        routes=health_routes(registry, readiness),
        on_startup=[startup],
        on_shutdown=[shutdown],
        title="omniroute notify",
    )
