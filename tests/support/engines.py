"""Engines with a hot standby, as the e2e tests drive them: metrics and the lease holder."""

from __future__ import annotations

import httpx

from omniroute.system import LocalSystem
from tests.support.waiting import wait_until


def metric(url: str, name: str) -> float:
    """One unlabelled sample of a service's /metrics."""
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def with_standby(system: LocalSystem, engine: str) -> tuple[str, str]:
    """Start a second `engine` process; (the lease holder, the standby) once exactly one holds."""
    standby = system.add_replica(engine)
    system.wait_ready(timeout_s=60, names=(standby,))
    gauge = f"omniroute_{engine}_lease_holder"
    wait_until(
        lambda: metric(system.url(engine), gauge) + metric(system.url(standby), gauge) == 1,
        30,
        "one lease holder",
    )
    holder = engine if metric(system.url(engine), gauge) == 1 else standby
    return holder, standby if holder == engine else engine
