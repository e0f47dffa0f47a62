"""LocalSystem gives each of its processes its own port."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import omniroute.system as system_module
from omniroute.system import LocalSystem, ServiceProcess


def test_a_port_the_kernel_offers_twice_is_not_given_twice(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    offered = iter([41001, 41001, 41002])
    monkeypatch.setattr(system_module, "free_port", lambda: next(offered))
    stack: Any = object()
    system = LocalSystem(stack, log_dir=tmp_path)
    system.services["sla"] = ServiceProcess("sla", system._free_port(), tmp_path / "sla.log")
    assert system._free_port() == 41002
