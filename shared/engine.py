"""One host for the engines (router, sla): their inputs, consumed on the lease holder only;
their clock; their readiness. An engine brings its decisions and its journal; this wires
the rest the same way for both (DESIGN.md, "Workers and engines")."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol

from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry

from shared.asyncapi import Records
from shared.broker import batch_subscriber, engine_partitions, verify_partitions
from shared.lease import EngineHost, EngineLease
from shared.mongo import StoreBackoff
from shared.settings import ServiceSettings


class Engine(Protocol):
    loaded: bool

    async def load(self) -> None: ...

    async def process(self, records: Sequence[Any]) -> int: ...

    async def run_clock(self, may_act: Callable[[], bool], interval_s: float) -> None: ...


def host_engine(
    engine: Engine,
    name: str,
    settings: ServiceSettings,
    registry: CollectorRegistry,
    *,
    lease: EngineLease,
    inputs: KafkaBroker,
    topics: Sequence[str],
    payload: Any,
    description: str,
    tick_interval_s: float,
    check_partitions: bool = True,
) -> EngineHost:
    """Subscribe the engine to every partition of `topics` (the lease is the membership:
    assigned, committed under the engine's group id) and host it behind the lease.

    `payload` is the union of contract models the topics carry (the AsyncAPI schema);
    `check_partitions` refuses to consume when the broker's partition counts differ from
    the contract's (real Kafka may), instead of silently skipping some."""
    backoff = StoreBackoff.create(name, registry)

    async def on_inputs(batch: Records[Any]) -> None:
        # State and events are journaled, then published, before the offsets commit.
        async with backoff.guard():
            await engine.process(batch)

    on_inputs.__annotations__ = {"batch": Records[payload], "return": None}
    batch_subscriber(
        inputs,
        settings,
        partitions=engine_partitions(*topics),
        group_id=f"omniroute-{name}",
        batch_timeout_ms=20,
        description=description,
    )(on_inputs)
    return EngineHost.create(
        name,
        registry,
        lease=lease,
        inputs=inputs,
        load_state=engine.load,
        check=partial(verify_partitions, settings.kafka_bootstrap, tuple(topics))
        if check_partitions
        else None,
        clock=lambda may_act: engine.run_clock(may_act, tick_interval_s),
    )
