"""Ingest's composition root: the only place that reads settings and builds clients."""

from __future__ import annotations

from datetime import UTC, datetime

from services.ingest.classify import load_rules
from services.ingest.erasure import ErasureStore, IngestErasure, KafkaTombstones, Tombstones
from services.ingest.erasure_api import make_erasure_routes
from services.ingest.handlers import Ingestor, Teacher
from services.ingest.http import make_routes
from services.ingest.intake import inbound_from_record
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
from shared.asyncapi import RawInbound
from shared.contracts.erasures import ErasureCompleted, ErasureRequested, LegalHoldChanged
from shared.contracts.tickets import TicketEvent
from shared.service import ServiceApp
from shared.settings import IngestSettings
from shared.topics import CUSTOMERS, DEADLETTER, ERASURES, INBOUND_BY_CHANNEL, MESSAGES, TICKETS
from shared.wiring import Given, Wiring

GROUP_ID = "omniroute-ingest"
INBOUND = tuple(INBOUND_BY_CHANNEL.values())


def build_app(
    settings: IngestSettings | None = None,
    given: Given | None = None,
    *,
    customers: CustomerStore | None = None,
    texts: TrainingStore | None = None,
    model: TextModel | None = None,
    tombstones: Tombstones | None = None,
) -> ServiceApp:
    settings = settings or IngestSettings()
    wiring = Wiring("ingest", settings, given)
    customers = customers or MongoCustomerStore(wiring.db)
    policy = load_policy(settings.policy_dir / "ingest.yaml")
    rules = load_rules(settings.policy_dir / "classify.yaml")
    # Refuses to start with a model below the policy's minimum accuracy.
    model = model or load_or_train(settings.classifier_model, settings.classifier_corpus, rules)
    texts = texts or MongoTrainingStore(wiring.db, rules.texts_kept_s)
    erasures = ErasureStore(wiring.db)
    wiring.indexes(customers, texts, erasures)
    metrics = IngestMetrics.create(wiring.registry)
    ingestor = Ingestor(
        customers=customers, rules=rules, model=model, policy=policy, metrics=metrics, texts=texts
    )
    teacher = Teacher(texts=texts, metrics=metrics)
    tombstones = tombstones or KafkaTombstones(settings.kafka_bootstrap)
    eraser = IngestErasure(erasures, tombstones, wiring.audit)
    wiring.retention(lambda policy: ingest_sweeps(wiring.db, policy, erasures.held))

    wiring.consume(
        "on_inbound",
        *INBOUND,
        group_id=GROUP_ID,
        payload=RawInbound,
        description="Customer messages from channel adapters in providers' own formats;"
        " each becomes one event on support.messages, or a dead letter with the reason",
        handle=lambda batch: ingestor.process([inbound_from_record(r) for r in batch]),
    )
    wiring.consume(
        "on_ticket",
        TICKETS,
        group_id="omniroute-ingest-training",
        payload=TicketEvent,
        description="Ticket events; agents' `recategorized` corrections become training examples",
        handle=teacher.process,
        batch_timeout_ms=200,
    )
    wiring.consume(
        "on_erasure",
        ERASURES,
        group_id="omniroute-ingest-erasures",
        payload=ErasureRequested | ErasureCompleted | LegalHoldChanged,
        description="Erasure requests (ingest erases its customer records and texts, then"
        " tombstones the customer on support.customers), every service's completion (the"
        " erasure log) and legal holds",
        handle=lambda batch: eraser.process(batch, datetime.now(UTC)),
    )

    async def warm_up() -> None:
        # Fail at boot, not on the first message, if a configured language is unknown; this
        # also builds the detector before traffic arrives.
        detect_language("warm up", None, policy.languages)

    wiring.startup.insert(0, warm_up)
    # Likely-P1 reports processed ahead of a surge; the in-order consumer still does all.
    # A test's in-memory broker has no partitions to read ahead.
    ahead = read_ahead(
        settings, ingestor, wiring.broker, wiring.registry, GROUP_ID, enabled=not wiring.in_memory
    )
    wiring.after_startup.append(ahead.start)
    wiring.shutdown.append(ahead.stop)
    access = wiring.access(metrics.access)
    routes = [
        *make_routes(settings, wiring.broker, customers, policy, metrics, access=access),
        *make_erasure_routes(wiring.broker, erasures, access=access),
    ]
    # Messages, customers' records (and, through their own producer, erasure.KafkaTombstones,
    # the tombstones of erased customers) and dead letters; the webhooks' payloads, forwarded
    # to the inbound topics; erasure requests, completions and holds.
    return wiring.app(routes, sends=(MESSAGES, CUSTOMERS, DEADLETTER, *INBOUND, ERASURES))
