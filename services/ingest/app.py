"""Ingest's composition root: the only place that reads settings and builds clients."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient

from services.ingest.classify import load_rules
from services.ingest.erasure import ErasureStore, IngestErasure, KafkaTombstones, Tombstones
from services.ingest.erasure_api import make_erasure_routes
from services.ingest.handlers import Ingestor, Teacher, inbound_from_record
from services.ingest.http import make_routes
from services.ingest.language import detect_language
from services.ingest.lookahead import read_ahead
from services.ingest.metrics import IngestMetrics
from services.ingest.pipeline import load_policy
from services.ingest.retention import ingest_sweeps
from services.ingest.store import (
    CustomerStore,
    MongoCustomerStore,
    MongoTrainingStore,
    TrainingStore,
)
from services.ingest.textmodel import TextModel
from services.ingest.training import load_or_train
from shared.access import Access
from shared.asyncapi import RawInbound, Records, declare_sends
from shared.audit import AuditLog, MongoAuditLog
from shared.broker import batch_subscriber, ensure_topics, make_broker
from shared.contracts.erasures import ErasureCompleted, ErasureRequested, LegalHoldChanged
from shared.contracts.tickets import TicketEvent
from shared.events import publish_all
from shared.logging import configure_logging
from shared.mongo import Document, StoreBackoff, make_mongo_client, ping
from shared.retention import Sweeper, load_retention
from shared.service import Readiness, ServiceApp, broker_check, health_routes, make_registry
from shared.settings import IngestSettings
from shared.topics import CUSTOMERS, DEADLETTER, ERASURES, INBOUND_BY_CHANNEL, MESSAGES, TICKETS

log = logging.getLogger(__name__)
GROUP_ID = "omniroute-ingest"
TRAINING_GROUP_ID = "omniroute-ingest-training"
ERASURE_GROUP_ID = "omniroute-ingest-erasures"


def build_app(
    settings: IngestSettings | None = None,
    *,
    broker: KafkaBroker | None = None,
    mongo: AsyncMongoClient[Document] | None = None,
    registry: CollectorRegistry | None = None,
    customers: CustomerStore | None = None,
    texts: TrainingStore | None = None,
    model: TextModel | None = None,
    audit: AuditLog | None = None,
    tombstones: Tombstones | None = None,
) -> ServiceApp:
    settings = settings or IngestSettings()
    registry = registry or make_registry("ingest")
    own_broker = broker is None  # a test's in-memory broker has no partitions to read ahead
    broker = broker or make_broker(settings, registry)
    mongo = mongo or make_mongo_client(settings)
    db = mongo[settings.mongo_db]
    customers = customers or MongoCustomerStore(db)
    policy = load_policy(settings.policy_dir / "ingest.yaml")
    rules = load_rules(settings.policy_dir / "classify.yaml")
    # Refuses to start with a model below the policy's minimum accuracy.
    model = model or load_or_train(settings.classifier_model, settings.classifier_corpus, rules)
    texts = texts or MongoTrainingStore(db, rules.texts_kept_s)
    metrics = IngestMetrics.create(registry)
    backoff = StoreBackoff.create("ingest", registry)
    ingestor = Ingestor(
        customers=customers, rules=rules, model=model, policy=policy, metrics=metrics, texts=texts
    )
    # Likely-P1 reports processed ahead of a surge; the in-order consumer still does all.
    lookahead = read_ahead(settings, ingestor, broker, registry, GROUP_ID, enabled=own_broker)

    teacher = Teacher(texts=texts, metrics=metrics)
    audit = audit or MongoAuditLog(db, settings.api_audit_retention_days)
    access = Access.create(settings, audit, metrics.access)
    retention = load_retention(settings.policy_dir / "retention.yaml")
    erasures = ErasureStore(db)
    eraser = IngestErasure(erasures, tombstones or KafkaTombstones(settings.kafka_bootstrap), audit)
    sweeper = Sweeper("ingest", retention, registry, ingest_sweeps(db, retention, erasures.held))

    @batch_subscriber(
        broker,
        settings,
        *INBOUND_BY_CHANNEL.values(),
        group_id=GROUP_ID,
        description="Customer messages from channel adapters in providers' own formats;"
        " each becomes one event on support.messages, or a dead letter with the reason",
    )
    async def on_inbound(batch: Records[RawInbound]) -> None:
        async with backoff.guard():
            events = await ingestor.process([inbound_from_record(r) for r in batch])
        # Offsets are committed (by the ack policy) only after every event is acknowledged.
        await publish_all(broker, events)

    @batch_subscriber(
        broker,
        settings,
        TICKETS,
        group_id=TRAINING_GROUP_ID,
        batch_timeout_ms=200,
        description="Ticket events; agents' `recategorized` corrections become training examples",
    )
    async def on_ticket(batch: Records[TicketEvent]) -> None:
        async with backoff.guard():
            dead = await teacher.process(batch)
        await publish_all(broker, dead)

    @batch_subscriber(
        broker,
        settings,
        ERASURES,
        group_id=ERASURE_GROUP_ID,
        description="Erasure requests (ingest erases its customer records and texts, then"
        " tombstones the customer on support.customers), every service's completion (the"
        " erasure log) and legal holds",
    )
    async def on_erasure(
        batch: Records[ErasureRequested | ErasureCompleted | LegalHoldChanged],
    ) -> None:
        async with backoff.guard():
            events = await eraser.process(batch, datetime.now(UTC))
        await publish_all(broker, events)

    # Messages, customers' records (and, through their own producer, erasure.KafkaTombstones,
    # the tombstones of erased customers) and dead letters; the webhooks' payloads, forwarded
    # to the inbound topics; erasure requests, completions and holds.
    declare_sends(broker, MESSAGES, CUSTOMERS, DEADLETTER, *INBOUND_BY_CHANNEL.values(), ERASURES)

    async def startup() -> None:
        configure_logging("ingest", settings.log_level)
        # Fail at boot, not on the first message, if a configured language is unknown; this
        # also builds the detector before traffic arrives.
        detect_language("warm up", None, policy.languages)
        if settings.kafka_create_topics:
            await ensure_topics(settings.kafka_bootstrap)
        await customers.ensure_indexes()
        await texts.ensure_indexes()
        await erasures.ensure_indexes()
        sweeper.start()

    async def shutdown() -> None:
        await sweeper.stop()
        await mongo.close()

    readiness = Readiness({"kafka": broker_check(broker), "mongodb": lambda: ping(db)})
    return ServiceApp(
        broker,
        routes=[
            *health_routes(registry, readiness),
            *make_routes(settings, broker, customers, policy, metrics, access=access),
            *make_erasure_routes(broker, erasures, access=access),
        ],
        on_startup=[startup],
        after_startup=[lookahead.start],
        on_shutdown=[lookahead.stop, shutdown],
        title="omniroute ingest",
    )
