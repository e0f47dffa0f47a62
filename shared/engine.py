"""One host for the engines (router, sla): their inputs, consumed on the lease holder only;
their clock; their readiness. An engine brings its decisions and its journal; this wires
the rest the same way for both (DESIGN.md, "Workers and engines")."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from faststream.kafka import KafkaBroker

from shared.asyncapi import Records
from shared.broker import batch_subscriber, engine_partitions, make_broker, verify_partitions
from shared.journal import (
    Compactor,
    Journal,
    KafkaPublishedLog,
    MongoJournal,
    NoPublishedLog,
    PublishedLog,
)
from shared.lease import EngineHost, EngineLease, Lease
from shared.settings import EngineSettings
from shared.wiring import Wiring


class Engine(Protocol):
    loaded: bool
    compactor: Compactor

    async def load(self) -> None: ...

    async def process(self, records: Sequence[Any]) -> int: ...

    async def run_clock(self, may_act: Callable[[], bool], interval_s: float) -> None: ...


@dataclass(frozen=True)
class EngineEdges:
    """What an engine needs besides its decisions and its store: the consumer of its
    inputs (used only on the lease holder), the lease, its journal and the published log
    that recovery reads back — from the settings, or as a test gives them (`Given`)."""

    inputs: KafkaBroker
    lease: EngineLease
    journal: Journal
    published: PublishedLog
    own_inputs: bool  # not a test's in-memory broker: partitions checked, look-ahead on

    @classmethod
    def create(
        cls, wiring: Wiring, settings: EngineSettings, *, journal: str, sends: Sequence[str]
    ) -> EngineEdges:
        """`journal` is the journal's collection; `sends` the topics whose tail recovery
        reads to find what a dead holder published."""
        given, name = wiring.given, wiring.name
        published = given.published or (
            NoPublishedLog()  # an in-memory broker has no topics to read back
            if wiring.in_memory
            else KafkaPublishedLog(
                settings.kafka_bootstrap,
                tuple(sends),
                fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            )
        )
        engine_settings = settings.model_copy(update={"service_name": f"{name}_engine"})
        return cls(
            inputs=given.inputs or make_broker(engine_settings, wiring.registry),
            lease=given.lease or Lease(wiring.db, name, ttl_s=settings.lease_ttl_s),
            journal=given.journal or MongoJournal(wiring.db, journal),
            published=published,
            own_inputs=given.inputs is None,
        )


def host_engine(
    engine: Engine,
    wiring: Wiring,
    edges: EngineEdges,
    settings: EngineSettings,
    *,
    topics: Sequence[str],
    payload: Any,
    description: str,
) -> EngineHost:
    """Subscribe the engine to every partition of `topics` (the lease is the membership:
    assigned, committed under the engine's group id) and host it behind the lease: it
    starts after the service, stops before it, and is part of its readiness.

    `payload` is the union of contract models the topics carry (the AsyncAPI schema). A
    real broker's partition counts are checked against the contract's before consuming
    (real Kafka may differ), instead of silently skipping some."""
    name = wiring.name

    async def on_inputs(batch: Records[Any]) -> None:
        # State and events are journaled, then published, before the offsets commit.
        async with wiring.backoff.guard():
            await engine.process(batch)

    on_inputs.__annotations__ = {"batch": Records[payload], "return": None}
    batch_subscriber(
        edges.inputs,
        settings,
        partitions=engine_partitions(*topics),
        group_id=f"omniroute-{name}",
        batch_timeout_ms=20,
        description=description,
    )(on_inputs)
    host = EngineHost.create(
        name,
        wiring.registry,
        lease=edges.lease,
        inputs=edges.inputs,
        load_state=engine.load,
        check=partial(verify_partitions, settings.kafka_bootstrap, tuple(topics))
        if edges.own_inputs
        else None,
        clock=lambda may_act: engine.run_clock(may_act, settings.tick_interval_s),
    )
    wiring.after_startup.append(host.start)
    wiring.shutdown += [engine.compactor.stop, host.stop]  # stopped in reverse order
    wiring.checks["engine"] = host.ready_check(lambda: engine.loaded)
    return host
