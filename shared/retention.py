"""Retention as policy: how long each kind of record is kept after its case closes, and
the sweeper every service runs to enforce it on its own data.

    policy = load_retention(settings.policy_dir / "retention.yaml")   # fails loudly
    sweeper = Sweeper("notify", policy, registry, [Sweep("notifications", remove_old)])
    sweeper.start()            # every sweep_interval_s: each Sweep once, bounded batches

A `Sweep` is one collection's rule: `remove(now, limit)` deletes at most `limit` expired
records (skipping customers under legal hold, see shared/holds.py) and returns how many.
The sweeper repeats a sweep while it fills its batch, so a backlog drains in bounded steps
without one huge delete holding the store's lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pymongo.asynchronous.collection import AsyncCollection

from shared.mongo import Document

log = logging.getLogger(__name__)

RecordKind = Literal[
    "message_text",
    "tickets",
    "decision_records",
    "notifications",
    "sla_timers",
    "dead_letters",
    "incidents",
    "training_examples",
    "audit",
]


class Keep(BaseModel):
    """One duration per kind of record: every kind must be stated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    message_text: timedelta
    tickets: timedelta
    decision_records: timedelta
    notifications: timedelta
    sla_timers: timedelta
    dead_letters: timedelta
    incidents: timedelta
    training_examples: timedelta
    audit: timedelta

    @field_validator("*")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("a retention period must be positive")
        return value


class RetentionPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sweep_interval_s: float = Field(default=3600.0, gt=0)
    batch_size: int = Field(default=500, ge=1, le=100_000)
    keep: Keep

    def cutoff(self, kind: RecordKind, now: datetime) -> datetime:
        """Records of `kind` whose case closed before this are expired."""
        kept: timedelta = getattr(self.keep, kind)
        return now - kept


def load_retention(path: Path) -> RetentionPolicy:
    return RetentionPolicy.model_validate(yaml.safe_load(path.read_text("utf-8")))


# remove(now, limit) -> how many records it removed (at most limit)
Remove = Callable[[datetime, int], Awaitable[int]]


@dataclass(frozen=True)
class Sweep:
    collection: str
    remove: Remove


def retention_counter(service: str, registry: CollectorRegistry) -> Counter:
    return Counter(
        "omniroute_retention_removed_total",
        "Records removed because their retention period ran out, by collection.",
        ["service", "collection"],
        registry=registry,
    )


@dataclass
class Sweeper:
    service: str
    policy: RetentionPolicy
    registry: CollectorRegistry
    sweeps: Sequence[Sweep]
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    max_rounds: int = 100  # batches per collection per sweep: a bound on one sweep's work
    removed: Counter = field(init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.removed = retention_counter(self.service, self.registry)
        for s in self.sweeps:
            self.removed.labels(self.service, s.collection)  # exported at 0 from the start

    async def sweep(self) -> dict[str, int]:
        """Each collection once (in bounded batches); returns what was removed per collection."""
        now = self.clock()
        counts: dict[str, int] = {}
        for s in self.sweeps:
            total = 0
            for _ in range(self.max_rounds):
                n = await s.remove(now, self.policy.batch_size)
                total += n
                if n < self.policy.batch_size:
                    break
            if total:
                self.removed.labels(self.service, s.collection).inc(total)
            counts[s.collection] = total
        return counts

    async def run(self, active: Callable[[], bool] = lambda: True) -> None:
        while True:
            if active():
                try:
                    counts = await self.sweep()
                    if any(counts.values()):
                        log.info("retention sweep", extra={"removed": counts})
                except Exception:
                    log.exception("retention sweep failed")
            await asyncio.sleep(self.policy.sweep_interval_s)

    def start(self, active: Callable[[], bool] = lambda: True) -> None:
        self._task = asyncio.create_task(self.run(active))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


async def remove_expired(
    collection: AsyncCollection[Document],
    query: Mapping[str, Any],
    limit: int,
    *,
    held: Iterable[str] = (),
    customer_field: str = "customer_id",
) -> int:
    """Delete at most `limit` documents matching `query`, none of a held customer's.

    Ids first, then one delete by id: a bounded batch even where the store reads every
    match (SecantusDB's deletes do), and a concurrent write in between is never lost.
    """
    held_ids = sorted(set(held))
    filt: dict[str, Any] = dict(query)
    if held_ids:
        filt[customer_field] = {"$nin": held_ids}
    ids = [d["_id"] async for d in collection.find(filt, {"_id": 1}).limit(limit)]
    if not ids:
        return 0
    result = await collection.delete_many({"_id": {"$in": ids}, **filt})
    return int(result.deleted_count)
