"""How every service's composition root is put together: one `Wiring` per service.

A service's `app.py` builds its decisions and stores and hands the rest to this: the
clients made from the settings (or given by a test: `Given`), the consumers (decode
happens in shared/consume.py; here: store backoff, then publish, then the offsets
commit), retention, readiness, and the ASGI app with its lifecycle. What differs
between services stays in their app.py; what is the same is written once here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient
from starlette.routing import BaseRoute

from shared.access import Access, AccessMetrics
from shared.asyncapi import Records, declare_sends, document
from shared.audit import AuditLog, MongoAuditLog
from shared.broker import batch_subscriber, ensure_topics, make_broker
from shared.events import OutboundEvent, publish_all
from shared.journal import Journal, PublishedLog
from shared.lease import EngineLease
from shared.logging import configure_logging
from shared.mongo import Document, StoreBackoff, make_mongo_client, ping
from shared.retention import RetentionPolicy, Sweep, Sweeper, load_retention
from shared.service import (
    Readiness,
    ReadinessCheck,
    ServiceApp,
    broker_check,
    health_routes,
    make_registry,
)
from shared.settings import ServiceSettings

Hook = Callable[[], Awaitable[None]]


class Indexed(Protocol):
    async def ensure_indexes(self) -> None: ...


@dataclass(frozen=True, kw_only=True)
class Given:
    """What a test hands a composition root instead of what the settings would build: an
    in-memory broker, a Mongo client that never connects, an always-held lease, memory
    journals. Production gives nothing. A given broker is in memory: it has no topics to
    read back or to read ahead, so the app leaves those parts out."""

    broker: KafkaBroker | None = None
    inputs: KafkaBroker | None = None  # an engine's consumer (on the lease holder)
    mongo: AsyncMongoClient[Document] | None = None
    registry: CollectorRegistry | None = None
    audit: AuditLog | None = None
    lease: EngineLease | None = None
    journal: Journal | None = None
    published: PublishedLog | None = None


class Wiring:
    """One service's clients, consumers, lifecycle hooks and readiness checks."""

    def __init__(
        self,
        name: str,
        settings: ServiceSettings,
        given: Given | None = None,
        *,
        linger_ms: int = 5,
    ) -> None:
        """`linger_ms`: how long the service's published records may wait to share a batch."""
        given = given or Given()
        self.name = name
        self.settings = settings
        self.given = given
        self.in_memory = given.broker is not None
        self.registry = given.registry or make_registry(name)
        self.broker = given.broker or make_broker(settings, self.registry, linger_ms=linger_ms)
        self.mongo = given.mongo or make_mongo_client(settings)
        self.db = self.mongo[settings.mongo_db]
        self.backoff = StoreBackoff.create(name, self.registry)
        self.checks: dict[str, ReadinessCheck] = {
            "kafka": broker_check(self.broker),
            "mongodb": lambda: ping(self.db),
        }
        self.startup: list[Hook] = []
        self.after_startup: list[Hook] = []
        # Run in reverse order of adding; the brokers stop after them, then Mongo closes.
        self.shutdown: list[Hook] = []
        self._audit: AuditLog | None = given.audit

    @property
    def audit(self) -> AuditLog:
        if self._audit is None:
            self._audit = MongoAuditLog(self.db, self.settings.api_audit_retention_days)
        return self._audit

    def access(self, metrics: AccessMetrics | None = None) -> Access:
        """The API's bearer-token guard, audited to this service's store."""
        return Access.create(
            self.settings, self.audit, metrics or AccessMetrics.create(self.name, self.registry)
        )

    def indexes(self, *stores: Indexed) -> None:
        for store in stores:
            self.startup.append(store.ensure_indexes)

    def retention(
        self,
        sweeps: Callable[[RetentionPolicy], Sequence[Sweep]],
        *,
        active: Callable[[], bool] | None = None,
    ) -> Sweeper:
        """Retention by policy/retention.yaml. A worker sweeps from start-up; an engine
        (`active`) only while it holds its lease, so one replica sweeps."""
        policy = load_retention(self.settings.policy_dir / "retention.yaml")
        sweeper = Sweeper(self.name, policy, self.registry, sweeps(policy))

        async def start() -> None:
            if active is None:
                sweeper.start()
            else:
                sweeper.start(active=active)

        (self.startup if active is None else self.after_startup).append(start)
        self.shutdown.append(sweeper.stop)
        return sweeper

    def consume(
        self,
        name: str,
        *topics: str,
        group_id: str,
        payload: Any,
        description: str,
        handle: Callable[[Records[Any]], Awaitable[Sequence[OutboundEvent]]],
        then: Callable[[], None] | None = None,
        batch_timeout_ms: int = 50,
    ) -> None:
        """A worker's consumer: each batch's effects stored by `handle` (waiting out a store
        outage), then its events published, then (by the ack policy) the offsets committed.
        `name` and `payload` (the contract models the topics carry) are what the AsyncAPI
        document shows."""

        async def on_batch(batch: Records[Any]) -> None:
            async with self.backoff.guard():
                events = await handle(batch)
            await publish_all(self.broker, events)
            if then is not None:
                then()

        on_batch.__name__ = on_batch.__qualname__ = name
        on_batch.__annotations__ = {"batch": Records[payload], "return": None}
        batch_subscriber(
            self.broker,
            self.settings,
            *topics,
            group_id=group_id,
            description=description,
            batch_timeout_ms=batch_timeout_ms,
        )(on_batch)

    def app(
        self,
        routes: Sequence[BaseRoute] = (),
        *,
        sends: Sequence[str],
        consumers: Sequence[KafkaBroker] = (),
    ) -> ServiceApp:
        """The service: `routes` beside /healthz, /readyz and /metrics; `sends` the topics it
        publishes to (for the AsyncAPI document); `consumers` brokers of its own besides
        the main one (an engine's inputs)."""
        declare_sends(self.broker, *sends)
        settings = self.settings

        async def startup() -> None:
            configure_logging(self.name, settings.log_level)
            if settings.kafka_create_topics:
                await ensure_topics(settings.kafka_bootstrap)
            for hook in self.startup:
                await hook()

        async def shutdown() -> None:
            for hook in reversed(self.shutdown):
                await hook()

        async def close_store() -> None:
            # After the brokers have stopped (FastStream stops them between on_shutdown and
            # after_shutdown): a batch still being handled keeps its store to the end.
            await self.mongo.close()

        title = f"omniroute {self.name}"
        return ServiceApp(
            self.broker,
            routes=[*health_routes(self.registry, Readiness(self.checks)), *routes],
            on_startup=[startup],
            after_startup=list(self.after_startup),
            on_shutdown=[shutdown],
            after_shutdown=[close_store],
            title=title,
            specification=document(title, *consumers, self.broker),
        )
