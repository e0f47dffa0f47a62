"""A fresh MongoDB database per test, on the session's SecantusDB of the service whose
store the test exercises (each service has its own server, as in production)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from shared.embedded import EmbeddedStack


@asynccontextmanager
async def fresh_database(stack: EmbeddedStack, service: str) -> AsyncIterator[Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        stack.mongo_uri(service), tz_aware=True
    )
    name = f"t_{service}_{uuid.uuid4().hex[:10]}"
    try:
        yield client[name]
    finally:
        await client.drop_database(name)
        await client.close()


def database_of(service: str) -> Any:
    """A fixture: a fresh database on `service`'s own server."""

    async def fixture(stack: EmbeddedStack) -> AsyncIterator[Any]:
        async with fresh_database(stack, service) as db:
            yield db

    return pytest.fixture(fixture, name=f"{service}_db")


ingest_db = database_of("ingest")
router_db = database_of("router")
sla_db = database_of("sla")
notify_db = database_of("notify")


@pytest.fixture
async def db(stack: EmbeddedStack) -> AsyncIterator[Any]:
    """One fresh database for a test of several services' store functions side by side
    (e.g. each service's retention sweep): in production each service has its own."""
    async with fresh_database(stack, "ingest") as db:
        yield db
