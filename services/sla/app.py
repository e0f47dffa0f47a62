"""SLA's composition root."""

from __future__ import annotations

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient

from services.sla.deadlines import SlaState, load_policy
from services.sla.handlers import Clock, SlaEngine
from services.sla.metrics import SlaMetrics
from services.sla.store import MongoSlaStore, SlaStore
from shared.broker import ensure_topics, make_broker
from shared.events import records_of
from shared.logging import configure_logging
from shared.mongo import Document, make_mongo_client, ping
from shared.service import Readiness, ServiceApp, broker_check, health_routes, make_registry
from shared.settings import SlaSettings
from shared.topics import TICKETS

GROUP_ID = "omniroute-sla"


def build_app(
    settings: SlaSettings | None = None,
    *,
    broker: KafkaBroker | None = None,
    mongo: AsyncMongoClient[Document] | None = None,
    registry: CollectorRegistry | None = None,
    store: SlaStore | None = None,
) -> ServiceApp:
    settings = settings or SlaSettings()
    registry = registry or make_registry("sla")
    broker = broker or make_broker(settings, registry)
    mongo = mongo or make_mongo_client(settings)
    db = mongo[settings.mongo_db]
    store = store or MongoSlaStore(db)
    engine = SlaEngine(
        state=SlaState(policy=load_policy(settings.policy_dir / "sla.yaml")),
        store=store,
        broker=broker,
        metrics=SlaMetrics.create(registry),
    )
    clock = Clock(engine, settings.tick_interval_s)

    @broker.subscriber(
        TICKETS,
        group_id=GROUP_ID,
        batch=True,
        max_records=settings.kafka_max_batch,
        batch_timeout_ms=20,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        description="Ticket events drive first-response, next-response and resolution timers",
    )
    async def on_ticket_events(msg: KafkaMessage) -> None:
        records = records_of(msg.raw_message)
        await engine.process(records)

    async def startup() -> None:
        configure_logging("sla", settings.log_level)
        if settings.kafka_create_topics:
            await ensure_topics(settings.kafka_bootstrap)
        await store.ensure_indexes()
        await engine.load()

    async def after_startup() -> None:
        clock.start()

    async def shutdown() -> None:
        await clock.stop()
        await mongo.close()

    async def loaded() -> None:
        if not engine.loaded:
            raise RuntimeError("state not loaded")

    readiness = Readiness(
        {"kafka": broker_check(broker), "mongodb": lambda: ping(db), "state": loaded}
    )
    return ServiceApp(
        broker,
        routes=health_routes(registry, readiness),
        on_startup=[startup],
        after_startup=[after_startup],
        on_shutdown=[shutdown],
        title="omniroute sla",
    )
