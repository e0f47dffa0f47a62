"""Engines run one writer with a hot standby: kill the lease holder, the standby takes over."""

from __future__ import annotations

import signal
import time
import uuid
from typing import Any

import httpx
import pytest

from omniroute.samples import chat_message
from omniroute.system import DEV_SECRET, DEV_TOKEN, LocalSystem
from services.ingest.http import SIGNATURE_HEADER, sign
from tests.support.engines import metric, with_standby
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": f"Bearer {DEV_TOKEN}"}


def holder_of(db: Any, name: str) -> str | None:
    doc = db[name].leases.find_one({"_id": name})  # in the engine's own database
    return doc["holder"] if doc else None


@pytest.mark.parametrize("engine", ["router", "sla"])
def test_standby_takes_over_when_the_holder_dies(system: LocalSystem, engine: str) -> None:
    db = system.databases()
    gauge = f"omniroute_{engine}_lease_holder"
    # Exactly one of the two consumes.
    active, other = with_standby(system, engine)
    system.kill(active, signal.SIGKILL)
    started = time.monotonic()
    wait_until(lambda: metric(system.url(other), gauge) == 1, 30, "standby took over")
    took_over_s = time.monotonic() - started
    assert took_over_s < 15, took_over_s

    # The survivor does the work: a new message is routed, timed and acknowledged.
    run = uuid.uuid4().hex[:6]
    agent = f"fo-{run}"
    router = system.url(other if engine == "router" else "router")
    httpx.put(
        f"{router}/v1/agents/{agent}",
        headers=AUTH,
        json={
            "name": "F",
            "languages": ["en", "zh"],
            "auto_accept": True,
            "capacity": {"chat": 50},
        },
    )
    httpx.post(f"{router}/v1/agents/{agent}/presence", headers=AUTH, json={"status": "online"})
    body = chat_message(f"fo-{run}", "m1", "my deposit has not arrived", visitor_id=f"fo-{run}")
    reply = httpx.post(
        f"{system.url('ingest')}/v1/inbound/chat/generic",
        content=body,
        headers={SIGNATURE_HEADER: sign(DEV_SECRET, body)},
    )
    [mid] = reply.json()["message_ids"]
    ticket = wait_until(
        lambda: db.tickets.find_one({"message_ids": mid, "agent_id": {"$ne": None}}),
        60,
        "ticket routed after failover",
    )
    wait_until(lambda: db.sla_timers.find_one({"ticket_id": ticket["_id"]}), 60, "timer")
    # Leave the module as it was: the survivor is the service's only process.
    if other != engine:
        system.services[engine] = system.services.pop(other)
