"""Two sla processes; the lease holder is SIGKILLed while thresholds fall due: the standby
takes over and every warning and breach leaves exactly once — none missing, none twice."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from omniroute.system import LocalSystem
from shared.embedded import EmbeddedStack
from tests.e2e.test_sla_timers import Desk, lease_holder, sla_system
from tests.support.waiting import await_until, wait_until

pytestmark = pytest.mark.e2e
S = timedelta(seconds=1)
TICKETS = 400
BURST = 1200
FIRST_RESPONSE_S = 3.0  # warning at 2.25 s


@pytest.fixture(scope="module")
def system(stack: EmbeddedStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSystem]:
    running = sla_system(
        stack,
        tmp_path_factory.mktemp("sla_failover"),
        "sla_failover",
        FIRST_RESPONSE_S,
        OMNIROUTE_LEASE_TTL_S="3",  # a dead holder is replaced within ~4 s
    )
    try:
        running.start(("sla",))
        running.add_replica("sla")
        running.wait_ready(timeout_s=60)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
async def desk(system: LocalSystem) -> AsyncIterator[Desk]:
    watching = Desk(system.stack.kafka_bootstrap)
    await watching.start()
    try:
        warm = watching.ticket("warmup")
        await watching.send(warm, "opened", datetime.now(UTC))
        await watching.wait_for(warm, "started", "first_response", timeout_s=60)
        yield watching
    finally:
        await watching.stop()


async def test_killing_the_active_engine_mid_run_fires_every_threshold_once(
    system: LocalSystem, desk: Desk
) -> None:
    replicas = ("sla", "sla#2")
    wait_until(
        lambda: sum(lease_holder(system.url(r)) for r in replicas) == 1, 30, "one lease holder"
    )
    active = next(r for r in replicas if lease_holder(system.url(r)) == 1)
    standby = next(r for r in replicas if r != active)

    # 400 tickets whose warnings and breaches fall due one after another over ~6 s.
    tickets = [desk.ticket(f"t{i}") for i in range(TICKETS)]
    start = datetime.now(UTC)
    for i, ticket in enumerate(tickets):
        opened_at = start - 2 * S + i * (6 * S / TICKETS)
        await desk.send(ticket, "opened", opened_at)
    expected = {(t, kind) for t in tickets for kind in ("warning", "breached")}

    def fired() -> set[tuple[str, str]]:
        ours = set(tickets)
        return {
            (s.data["ticket_id"], s.event)
            for s in desk.seen
            if s.event in ("warning", "breached") and s.data["ticket_id"] in ours
        }

    async def a_third_fired() -> bool:
        return len(fired()) >= len(expected) // 3

    await await_until(a_third_fired, 30, "a third of the thresholds")
    # A burst of new tickets keeps the engine busy storing and publishing batches, and it
    # dies in the middle of that while thresholds keep falling due.
    burst = [desk.ticket(f"b{i}") for i in range(BURST)]
    await desk.open_many(burst, datetime.now(UTC))
    system.kill(active, signal.SIGKILL)
    tickets += burst
    expected |= {(t, kind) for t in burst for kind in ("warning", "breached")}
    wait_until(lambda: lease_holder(system.url(standby)) == 1, 30, "standby took over")

    async def all_fired() -> bool:
        return fired() >= expected

    await await_until(all_fired, 60, "every threshold after the takeover")
    ours = [s for s in desk.seen if s.data["ticket_id"] in set(tickets)]
    # Exactly once: one record per event id, one event id per (timer, event) — thresholds
    # and the burst's `started` events alike.
    copies = Counter(s.ce_id for s in ours)
    assert [i for i, n in copies.items() if n > 1] == []
    per_event = Counter((s.data["timer_id"], s.event) for s in ours)
    assert all(n == 1 for n in per_event.values()), per_event.most_common(3)
    assert fired() == expected
    started = {(s.data["ticket_id"], s.metric) for s in ours if s.event == "started"}
    assert len(started) == 2 * len(tickets)
    # Each threshold still says when it was due; the lag is only the takeover's.
    for s in ours:
        if s.event == "breached":
            assert s.at("threshold_at") == s.at("due_at")
