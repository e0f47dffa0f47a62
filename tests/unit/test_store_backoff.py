"""A batch that fails on MongoDB is paused before its redelivery, longer each time in a row."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from pymongo.errors import ServerSelectionTimeoutError

from shared.mongo import StoreBackoff


def backoff() -> tuple[StoreBackoff, list[float], CollectorRegistry]:
    registry = CollectorRegistry()
    pauses: list[float] = []

    async def sleep(s: float) -> None:
        pauses.append(s)

    guard = StoreBackoff.create("ingest", registry)
    guard.sleep = sleep
    return guard, pauses, registry


async def fail(guard: StoreBackoff) -> None:
    with pytest.raises(ServerSelectionTimeoutError):  # still raised: the batch is NACKed
        async with guard.guard():
            raise ServerSelectionTimeoutError("no server")


async def test_store_errors_pause_longer_each_time_up_to_the_cap() -> None:
    guard, pauses, registry = backoff()
    for _ in range(6):
        await fail(guard)
    assert pauses == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert registry.get_sample_value("omniroute_ingest_store_errors_total") == 6


async def test_a_stored_batch_resets_the_pause() -> None:
    guard, pauses, _ = backoff()
    await fail(guard)
    await fail(guard)
    async with guard.guard():
        pass
    await fail(guard)
    assert pauses == [0.5, 1.0, 0.5]


async def test_other_errors_pass_through_at_once() -> None:
    guard, pauses, registry = backoff()
    with pytest.raises(ValueError, match="bad input"):
        async with guard.guard():
            raise ValueError("bad input")
    assert pauses == []
    assert registry.get_sample_value("omniroute_ingest_store_errors_total") == 0
