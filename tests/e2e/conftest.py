"""The system as in production: each service its own process, on the session's stack."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from omniroute.system import LocalSystem, ServiceDatabases
from shared.embedded import EmbeddedStack


@pytest.fixture(scope="module")
def system(stack: EmbeddedStack, request: pytest.FixtureRequest) -> Iterator[LocalSystem]:
    # A system per test module, each with its own databases (`e2e_<module>_<service>`, each
    # on that service's own SecantusDB): one module's queued tickets are never another
    # module's agents' work.
    name = request.module.__name__.rsplit(".", 1)[-1]
    running = LocalSystem(stack, log_dir=stack.root / "logs" / name, mongo_db=f"e2e_{name}")
    try:
        running.start()
        running.wait_ready(timeout_s=90)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def db(system: LocalSystem) -> Iterator[ServiceDatabases]:
    """What the services stored, read directly: `db.router` is the router's own database,
    `db.tickets` the collection in the database of the service that declares it."""
    databases = system.databases()
    yield databases
    databases.close()
