"""Session fixtures: one embedded stack (Tansu + SecantusDB) for the whole run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.embedded import EmbeddedStack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    data: Path = tmp_path_factory.mktemp("stack")
    with EmbeddedStack(data_dir=data) as running:
        yield running
