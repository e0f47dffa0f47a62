"""SLA's composition root."""

from __future__ import annotations

from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient

from services.sla.deadlines import SlaState, load_policy
from services.sla.engine import GcPause, SlaEngine
from services.sla.erasure import SlaErasure
from services.sla.metrics import SlaMetrics
from services.sla.store import JOURNAL, MongoSlaStore, SlaStore
from shared.asyncapi import declare_sends, document
from shared.broker import (
    ensure_topics,
    make_broker,
)
from shared.contracts.erasures import ErasureEvent
from shared.contracts.tickets import TicketEvent
from shared.engine import host_engine
from shared.journal import (
    BrokerOutput,
    Journal,
    KafkaPublishedLog,
    MongoJournal,
    NoPublishedLog,
    Output,
    ProducerOutput,
    PublishedLog,
)
from shared.lease import EngineLease, Lease
from shared.logging import configure_logging
from shared.mongo import Document, make_mongo_client, ping
from shared.retention import Sweeper, load_retention
from shared.service import Readiness, ServiceApp, broker_check, health_routes, make_registry
from shared.settings import SlaSettings
from shared.topics import DEADLETTER, ERASURES, SLA, TICKETS

INPUT_TOPICS = (TICKETS, ERASURES)


def build_app(
    settings: SlaSettings | None = None,
    *,
    broker: KafkaBroker | None = None,
    inputs: KafkaBroker | None = None,
    mongo: AsyncMongoClient[Document] | None = None,
    registry: CollectorRegistry | None = None,
    lease: EngineLease | None = None,
    store: SlaStore | None = None,
    journal: Journal | None = None,
    published: PublishedLog | None = None,
) -> ServiceApp:
    settings = settings or SlaSettings()
    registry = registry or make_registry("sla")
    # The engine's events leave through its own producer; a broker given by a test (the
    # in-memory one) carries them instead, with nothing to look up on recovery.
    producer: ProducerOutput | None = None
    output: Output
    if broker is None:
        producer = ProducerOutput(
            {
                "bootstrap_servers": settings.kafka_bootstrap,
                "client_id": "omniroute-sla-output",
                "acks": "all",
                "enable_idempotence": settings.kafka_idempotent_producer,
                "linger_ms": 0,  # a threshold's event leaves at once; a batch's batch anyway
            }
        )
        output = producer
        published = published or KafkaPublishedLog(
            settings.kafka_bootstrap,
            (SLA, DEADLETTER),
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        )
        broker = make_broker(settings, registry)  # the app's lifecycle and Kafka health check
    else:
        output = BrokerOutput(broker)
        published = published or NoPublishedLog()
    # `inputs` consumes only on the lease holder.
    own_inputs = inputs is None
    inputs = inputs or make_broker(
        settings.model_copy(update={"service_name": "sla_engine"}), registry
    )
    mongo = mongo or make_mongo_client(settings)
    db = mongo[settings.mongo_db]
    journal = journal or MongoJournal(db, JOURNAL)
    store = store or MongoSlaStore(db)
    lease = lease or Lease(db, "sla", ttl_s=settings.lease_ttl_s)
    engine = SlaEngine(
        state=SlaState(
            policy=load_policy(settings.policy_dir / "sla.yaml"),
            dedupe_window_s=settings.dedupe_window_s,
        ),
        store=store,
        output=output,
        metrics=SlaMetrics.create(registry),
        journal=journal,
        published=published,
        lease=lease,
        max_fire=settings.max_fire_per_step,
        compact_interval_s=settings.compact_interval_s,
        # A process of its own (not an in-memory test): keep full collections off firing.
        gc=GcPause() if producer is not None else None,
        erasure=SlaErasure(db),
    )
    retention = load_retention(settings.policy_dir / "retention.yaml")
    sweeper = Sweeper("sla", retention, registry, engine.erasure.sweeps(retention))

    host = host_engine(
        engine,
        "sla",
        settings,
        registry,
        lease=lease,
        inputs=inputs,
        topics=INPUT_TOPICS,
        payload=TicketEvent | ErasureEvent,
        description="Ticket events drive first-response, next-response and resolution timers"
        " (started, paused while waiting on the customer, met), on the lease holder; erasures"
        " anonymise the customer's timers, legal holds keep them from retention",
        tick_interval_s=settings.tick_interval_s,
        check_partitions=own_inputs,
    )
    # The engine's timer events, dead letters and erasure completions.
    declare_sends(broker, SLA, DEADLETTER, ERASURES)

    async def startup() -> None:
        configure_logging("sla", settings.log_level)
        if settings.kafka_create_topics:
            await ensure_topics(settings.kafka_bootstrap)
        await store.ensure_indexes()
        if producer is not None:
            await producer.start()

    async def after_startup() -> None:
        await host.start()
        sweeper.start(active=lambda: host.active)  # retention on the lease holder only

    async def shutdown() -> None:
        await sweeper.stop()
        await host.stop()
        await engine.compactor.stop()
        if producer is not None:
            await producer.stop()
        await mongo.close()

    engine_ready = host.ready_check(lambda: engine.loaded)
    readiness = Readiness(
        {"kafka": broker_check(broker), "mongodb": lambda: ping(db), "engine": engine_ready}
    )
    return ServiceApp(
        broker,
        routes=health_routes(registry, readiness),
        on_startup=[startup],
        after_startup=[after_startup],
        on_shutdown=[shutdown],
        title="omniroute sla",
        specification=document("omniroute sla", inputs, broker),
    )
