"""Router's composition root."""

from __future__ import annotations

import logging

from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient

from services.router.engine import RouterEngine
from services.router.erasure import RouterErasure
from services.router.http import make_routes
from services.router.lookahead import read_ahead
from services.router.metrics import RouterMetrics
from services.router.priority import load_policy
from services.router.state import RouterState
from services.router.store import JOURNAL, MongoRouterStore, RouterStore
from shared.access import Access, AccessMetrics
from shared.asyncapi import declare_sends, document
from shared.audit import AuditLog, MongoAuditLog
from shared.broker import (
    ensure_topics,
    make_broker,
)
from shared.contracts.agents import AgentEvent
from shared.contracts.erasures import ErasureEvent
from shared.contracts.messages import MessageReceived
from shared.contracts.sla import SlaEvent
from shared.engine import host_engine
from shared.journal import (
    BrokerOutput,
    Journal,
    KafkaPublishedLog,
    MongoJournal,
    NoPublishedLog,
    PublishedLog,
)
from shared.lease import EngineLease, Lease
from shared.logging import configure_logging
from shared.mongo import Document, make_mongo_client, ping
from shared.retention import Sweeper, load_retention
from shared.service import Readiness, ServiceApp, broker_check, health_routes, make_registry
from shared.settings import RouterSettings
from shared.topics import AGENTS, DEADLETTER, ERASURES, MESSAGES, SLA, TICKETS

INPUT_TOPICS = (MESSAGES, AGENTS, SLA, ERASURES)
log = logging.getLogger(__name__)


def build_app(
    settings: RouterSettings | None = None,
    *,
    broker: KafkaBroker | None = None,
    inputs: KafkaBroker | None = None,
    mongo: AsyncMongoClient[Document] | None = None,
    registry: CollectorRegistry | None = None,
    lease: EngineLease | None = None,
    store: RouterStore | None = None,
    audit: AuditLog | None = None,
    journal: Journal | None = None,
    published: PublishedLog | None = None,
) -> ServiceApp:
    settings = settings or RouterSettings()
    registry = registry or make_registry("router")
    # Two brokers: `broker` publishes (and serves the API) on every replica; `inputs`
    # consumes, and only on the replica that holds the lease. A broker given by a test
    # (the in-memory one) has no topics to read back on recovery.
    if published is None:
        published = (
            NoPublishedLog()
            if broker is not None
            else KafkaPublishedLog(
                settings.kafka_bootstrap,
                (TICKETS, DEADLETTER),
                fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            )
        )
    # No linger on what the router publishes (the engine's events, the API's agent
    # actions): the P1 path pays no batching wait, and a step's events batch anyway.
    broker = broker or make_broker(settings, registry, linger_ms=0)
    own_inputs = inputs is None
    inputs = inputs or make_broker(
        settings.model_copy(update={"service_name": "router_engine"}), registry
    )
    mongo = mongo or make_mongo_client(settings)
    db = mongo[settings.mongo_db]
    store = store or MongoRouterStore(db)
    access = Access.create(
        settings,
        audit or MongoAuditLog(db, settings.api_audit_retention_days),
        AccessMetrics.create("router", registry),
    )
    policy = load_policy(settings.policy_dir / "routing.yaml")
    lease = lease or Lease(db, "router", ttl_s=settings.lease_ttl_s)
    engine = RouterEngine(
        state=RouterState(policy=policy),
        store=store,
        journal=journal or MongoJournal(db, JOURNAL),
        output=BrokerOutput(broker),
        metrics=RouterMetrics.create(registry),
        published=published,
        lease=lease,
        erasure=RouterErasure(db),
    )
    retention = load_retention(settings.policy_dir / "retention.yaml")
    sweeper = Sweeper("router", retention, registry, engine.erasure.sweeps(retention))

    host = host_engine(
        engine,
        "router",
        settings,
        registry,
        lease=lease,
        inputs=inputs,
        topics=INPUT_TOPICS,
        payload=MessageReceived | AgentEvent | SlaEvent | ErasureEvent,
        description="Customer messages (support.messages), agent profiles, presence and"
        " actions (support.agents), SLA warnings and breaches (support.sla) and erasures"
        " and legal holds (support.erasures), applied in order to one matching engine on"
        " the lease holder",
        tick_interval_s=settings.tick_interval_s,
        check_partitions=own_inputs,
    )
    # The engine's ticket events, dead letters and erasure completions; the API's agent
    # actions.
    declare_sends(broker, TICKETS, DEADLETTER, AGENTS, ERASURES)

    async def startup() -> None:
        configure_logging("router", settings.log_level)
        if settings.kafka_create_topics:
            await ensure_topics(settings.kafka_bootstrap)
        await store.ensure_indexes()
        await lookahead.start()  # idle until this replica holds the lease

    async def after_startup() -> None:
        await host.start()
        sweeper.start(active=lambda: host.active)  # retention on the lease holder only

    async def shutdown() -> None:
        await sweeper.stop()
        await host.stop()
        await engine.compactor.stop()
        await mongo.close()
        await lookahead.stop()  # idle since host.stop() gave the lease up

    # P1 messages applied ahead of a surge, on the lease holder, through the engine's step.
    lookahead = read_ahead(
        settings, engine, host.may_act, registry, "omniroute-router", enabled=own_inputs
    )

    engine_ready = host.ready_check(lambda: engine.loaded)
    readiness = Readiness(
        {"kafka": broker_check(broker), "mongodb": lambda: ping(db), "engine": engine_ready}
    )
    return ServiceApp(
        broker,
        routes=[
            *health_routes(registry, readiness),
            *make_routes(settings, broker, store, access=access, engine=engine),
        ],
        on_startup=[startup],
        after_startup=[after_startup],
        on_shutdown=[shutdown],
        title="omniroute router",
        specification=document("omniroute router", inputs, broker),
    )
