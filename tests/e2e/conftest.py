"""The system as in production: each service its own process, on the session's stack."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.system import LocalSystem
from shared.embedded import EmbeddedStack


@pytest.fixture(scope="session")
def system(stack: EmbeddedStack) -> Iterator[LocalSystem]:
    running = LocalSystem(stack, log_dir=stack.root / "logs")
    try:
        running.start()
        running.wait_ready(timeout_s=90)
        yield running
    finally:
        running.stop()
