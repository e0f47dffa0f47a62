"""Single-writer engines with hot standby: a lease in MongoDB decides who consumes.

The lease is one document per engine: {"_id": name, "holder", "expires_at", "epoch"}.
The holder renews it every `ttl_s / 3`; a standby takes it once it has expired, so a
dead holder is replaced within `ttl_s` plus one renew interval. Only the holder runs the
engine's input consumer; it stops consuming as soon as it cannot prove it still holds the
lease (`valid()` counts from the last successful renewal, on the local monotonic clock).

Every lease operation is bounded in time: a MongoDB that hangs (a frozen process, a network
that drops packets) must not hold the host's loop past the lease's validity, or a holder that
can no longer renew would go on consuming. When MongoDB comes back, the holder (or a standby)
takes the lease again and reloads the state by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry, Gauge
from pymongo.errors import DuplicateKeyError, PyMongoError

from shared.mongo import Database

log = logging.getLogger(__name__)


class LeaseLost(RuntimeError):
    """Raised inside a handler when this replica can no longer prove it holds the lease."""


def replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class EngineLease(Protocol):
    """What an engine and its host need of a lease: `Lease` in MongoDB, or a test's own."""

    @property
    def name(self) -> str: ...

    @property
    def renew_every_s(self) -> float: ...

    async def acquire_or_renew(self) -> bool:
        """Takes or renews the lease: True if this replica holds it."""
        ...

    def valid(self) -> bool:
        """Whether this replica can still prove it holds the lease (no I/O)."""
        ...

    async def release(self) -> None: ...

    def check(self) -> None:
        """Raises LeaseLost unless `valid()`."""
        ...


@dataclass
class Lease:
    db: Database
    name: str
    holder: str = field(default_factory=replica_id)
    ttl_s: float = 6.0
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    _valid_until: float = 0.0

    @property
    def renew_every_s(self) -> float:
        return self.ttl_s / 3

    async def acquire_or_renew(self) -> bool:
        """True if this replica holds the lease for the next `ttl_s` seconds."""
        started = time.monotonic()
        now = self.clock()
        try:
            # Wait while the lease is still valid anyway (at least one renew interval), no
            # longer: past that the host must be free to stop consuming.
            result = await asyncio.wait_for(
                self.db["leases"].update_one(
                    {
                        "_id": self.name,
                        "$or": [{"holder": self.holder}, {"expires_at": {"$lt": now}}],
                    },
                    {
                        "$set": {
                            "holder": self.holder,
                            "expires_at": now + timedelta(seconds=self.ttl_s),
                            "renewed_at": now,
                        }
                    },
                    upsert=True,
                ),
                max(self.renew_every_s, self._valid_until - started),
            )
        except DuplicateKeyError:
            return False  # the document exists and someone else holds it
        except (PyMongoError, TimeoutError) as exc:
            log.warning(
                "lease renewal failed", extra={"lease": self.name, "error": type(exc).__name__}
            )
            return False
        held = result.matched_count > 0 or result.upserted_id is not None
        if held:
            # Count from before the round trip: the document may have been written early.
            self._valid_until = started + self.ttl_s * 0.8
        return held

    def valid(self) -> bool:
        return time.monotonic() < self._valid_until

    async def release(self) -> None:
        self._valid_until = 0.0
        with contextlib.suppress(PyMongoError, TimeoutError):
            await asyncio.wait_for(
                self.db["leases"].update_one(
                    {"_id": self.name, "holder": self.holder},
                    {"$set": {"expires_at": self.clock() - timedelta(seconds=1)}},
                ),
                self.renew_every_s,
            )

    def check(self) -> None:
        if not self.valid():
            raise LeaseLost(self.name)


@dataclass
class EngineHost:
    """Runs an engine's input broker, and its clock, only while this replica holds the lease.

    `clock` is the engine's timer loop, given a test of whether it may act now (this
    replica holds a valid lease): it runs on every replica and idles on a standby."""

    lease: EngineLease
    inputs: KafkaBroker
    load_state: Callable[[], Awaitable[None]]
    holder_gauge: Gauge
    # Run before consuming (e.g. the broker's partitions are the ones the engine assigns).
    check: Callable[[], Awaitable[None]] | None = None
    clock: Callable[[Callable[[], bool]], Coroutine[None, None, None]] | None = None
    activation_timeout_s: float = 20.0
    active: bool = False
    task: asyncio.Task[None] | None = None
    clock_task: asyncio.Task[None] | None = None

    @classmethod
    def create(
        cls,
        engine: str,
        registry: CollectorRegistry,
        *,
        lease: EngineLease,
        inputs: KafkaBroker,
        load_state: Callable[[], Awaitable[None]],
        check: Callable[[], Awaitable[None]] | None,
        clock: Callable[[Callable[[], bool]], Coroutine[None, None, None]],
    ) -> EngineHost:
        gauge = Gauge(
            f"omniroute_{engine}_lease_holder",
            f"1 while this replica holds the {engine} lease, consumes and runs its clock.",
            registry=registry,
        )
        return cls(lease, inputs, load_state, gauge, check=check, clock=clock)

    def may_act(self) -> bool:
        return self.active and self.lease.valid()

    def ready_check(self, loaded: Callable[[], bool]) -> Callable[[], Awaitable[None]]:
        """For `/readyz`: the holder is ready once its state is loaded."""

        async def check() -> None:
            if self.active and not loaded():
                raise RuntimeError("state not loaded")

        return check

    async def _activate(self) -> None:
        # Loading the state and starting the consumer can take longer than the lease:
        # keep renewing meanwhile, or a standby would take it while we start.
        log.info("lease taken: loading state", extra={"lease": self.lease.name})
        renewing = asyncio.create_task(self._keep_renewing())
        try:
            # Bounded: an activation stuck on an unreachable broker or store must give the
            # lease back (the standby may reach them), not hold it while doing nothing.
            async with asyncio.timeout(self.activation_timeout_s):
                started = time.monotonic()
                if self.check is not None:
                    await self.check()
                checked = time.monotonic()
                await self.load_state()  # everything the previous holder stored
                loaded = time.monotonic()
                await self.inputs.start()
            log.info(
                "engine activated",
                extra={
                    "lease": self.lease.name,
                    "check_s": round(checked - started, 3),
                    "load_s": round(loaded - checked, 3),
                    "start_s": round(time.monotonic() - loaded, 3),
                },
            )
        except BaseException:
            renewing.cancel()
            with contextlib.suppress(Exception):
                await self.inputs.stop()
            await self.lease.release()
            raise
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
        self.active = True
        self.holder_gauge.set(1)
        log.info("lease acquired: consuming", extra={"lease": self.lease.name})

    async def _deactivate(self) -> None:
        self.active = False
        self.holder_gauge.set(0)
        with contextlib.suppress(Exception):
            await self.inputs.stop()
        log.warning("lease lost: stopped consuming", extra={"lease": self.lease.name})

    async def _keep_renewing(self) -> None:
        while True:
            await asyncio.sleep(self.lease.renew_every_s)
            await self.lease.acquire_or_renew()

    async def step(self) -> None:
        held = await self.lease.acquire_or_renew()
        if held and not self.active:
            await self._activate()
        elif self.active and not self.lease.valid():
            await self._deactivate()

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except Exception:  # keep competing; a failed activation is retried
                log.exception("engine host step failed", extra={"lease": self.lease.name})
                if self.active:
                    await self._deactivate()
            await asyncio.sleep(self.lease.renew_every_s)

    async def start(self) -> None:
        """Compete for the lease in the background (an after-startup hook)."""
        self.task = asyncio.create_task(self.run())
        if self.clock is not None:
            self.clock_task = asyncio.create_task(self.clock(self.may_act))

    async def stop(self) -> None:
        for task in (self.clock_task, self.task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.active:
            await self._deactivate()
        await self.lease.release()
