"""The system as in production: each service its own process, on the session's stack."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient

from omniroute.system import LocalSystem
from shared.embedded import EmbeddedStack


@pytest.fixture(scope="module")
def system(stack: EmbeddedStack, request: pytest.FixtureRequest) -> Iterator[LocalSystem]:
    # A system per test module, each with its own database: one module's queued tickets
    # are never another module's agents' work.
    name = request.module.__name__.rsplit(".", 1)[-1]
    running = LocalSystem(stack, log_dir=stack.root / "logs" / name, mongo_db=f"e2e_{name}")
    try:
        running.start()
        running.wait_ready(timeout_s=90)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def db(system: LocalSystem) -> Iterator[Any]:
    """The module system's database, read directly (what the services stored)."""
    client: MongoClient[dict[str, Any]] = MongoClient(system.stack.mongo_uri, tz_aware=True)
    yield client[system.mongo_db]
    client.close()
