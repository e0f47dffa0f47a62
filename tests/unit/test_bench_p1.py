"""The P1 scenario's samples with the P1 path at real-time priority: every thread of those
processes really runs real-time for the sample and as before after it, a refusal is
reported instead of measured, and the table keeps the two kinds of samples apart."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from omniroute.bench.kit import bucket_quantiles
from omniroute.bench.p1 import OWN_CPU, REALTIME, first_on_cpu, may_put_first, realtime
from omniroute.bench.run import render


def start_child() -> subprocess.Popen[bytes]:
    """A process with a second thread: the scheduling policy is per thread on Linux."""
    script = "import threading, time; threading.Thread(target=time.sleep, args=(30,)).start()"
    proc = subprocess.Popen([sys.executable, "-c", script + "; time.sleep(30)"])
    deadline = time.monotonic() + 10
    while len(os.listdir(f"/proc/{proc.pid}/task")) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "no second thread"
        time.sleep(0.01)
    return proc


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    proc = start_child()
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def may_schedule(child: subprocess.Popen[bytes]) -> None:
    if (refused := may_put_first({"child": child.pid})) is not None:
        pytest.skip(refused)  # no CAP_SYS_NICE here: the scenario reports the refusal


def policies(pid: int) -> list[tuple[int, int]]:
    return [
        (os.sched_getscheduler(int(t)), os.sched_getparam(int(t)).sched_priority)
        for t in os.listdir(f"/proc/{pid}/task")
    ]


FIFO_RESET = os.SCHED_FIFO | os.SCHED_RESET_ON_FORK


def test_every_thread_runs_first_inside_and_as_before_after(
    child: subprocess.Popen[bytes], may_schedule: None
) -> None:
    before = policies(child.pid)
    assert before == [(os.SCHED_OTHER, 0)] * len(before)

    with first_on_cpu({"child": child.pid}):
        # Real-time, and whatever it starts meanwhile is not.
        assert policies(child.pid) == [(FIFO_RESET, REALTIME)] * len(before)
        assert realtime(child.pid)

    assert policies(child.pid) == before
    assert not realtime(child.pid)


def test_everything_is_restored_when_the_sample_fails_or_a_process_ended(
    child: subprocess.Popen[bytes], may_schedule: None
) -> None:
    ended = start_child()

    def failing_sample() -> None:
        with first_on_cpu({"ended": ended.pid, "child": child.pid}):
            ended.kill()
            ended.wait()  # gone before the restore, which must go on to the others
            raise TimeoutError("P1 never offered")

    with pytest.raises(TimeoutError, match="never offered"):  # the sample's own error
        failing_sample()
    assert policies(child.pid) == [(os.SCHED_OTHER, 0)] * len(policies(child.pid))


def test_a_refusal_is_reported_not_raised(
    child: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(tid: int, policy: int, param: Any) -> None:
        if policy != os.SCHED_OTHER:
            raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    assert may_put_first({"child": child.pid}) == (
        "real-time scheduling refused: Operation not permitted"
    )


def figures(p50: float) -> dict[str, Any]:
    figure = {"p50_ms": p50, "p95_ms": p50 * 2, "p99_ms": p50 * 3, "max_ms": p50 * 3}
    return {
        "time_to_offer_after_agent_frees": figure,
        "resolve_call": figure,
        "decided_after_agent_frees": figure,
        "offer_after_decision": figure,
        "queued_after_arrival": figure,
    }


def p1_result(own: dict[str, Any]) -> dict[str, Any]:
    return {
        "backlog": 3000,
        **figures(12.0),
        OWN_CPU: own,
        "acknowledgements_outstanding": {"first": 2000, "last": 1800, "min": 1800},
        "load_average_at_start": [2.5, 1.0, 1.0],
        "load_average_at_end": [6.7, 2.0, 1.0],
    }


MACHINE = {"cpu": "x", "cores": 2, "memory_gib": 1, "python": "3", "date": "d"}


def offer_rows(own: dict[str, Any]) -> list[str]:
    table = render({"machine": MACHINE, "p1": p1_result(own)})
    return [line for line in table.splitlines() if line.startswith("P1 time-to-offer")]


def test_the_table_names_which_samples_had_the_cpus_first() -> None:
    rows = offer_rows({"processes": ["router", "tansu"], "policy": "SCHED_FIFO 10", **figures(5.0)})

    assert len(rows) == 2
    assert "CPUs shared" in rows[0] and "p50 12.0 ms" in rows[0] and "load 2.5 → 6.7" in rows[0]
    assert "router, tansu at real-time priority" in rows[1] and "p50 5.0 ms" in rows[1]


def test_the_table_says_why_the_p1_path_was_not_put_first() -> None:
    rows = offer_rows({"refused": "real-time scheduling refused: Operation not permitted"})

    assert len(rows) == 2 and "p50 12.0 ms" in rows[0]
    assert "not measured: real-time scheduling refused" in rows[1] and "p50" not in rows[1]


def test_bucket_quantiles_count_only_what_happened_between_the_scrapes() -> None:
    inf = float("inf")
    before = {"journal": {0.001: 5.0, 0.005: 10.0, 0.05: 10.0, inf: 10.0}}
    # Since: 100 journal appends, 97 within 1 ms and 3 between 5 and 50 ms; a new label.
    after = {
        "journal": {0.001: 102.0, 0.005: 107.0, 0.05: 110.0, inf: 110.0},
        "publish": {0.001: 0.0, 0.005: 4.0, 0.05: 4.0, inf: 4.0},
    }

    got = bucket_quantiles(before, after)

    assert got["journal"] == {"count": 100.0, "p50_at_most_ms": 1.0, "p99_at_most_ms": 50.0}
    assert got["publish"] == {"count": 4.0, "p50_at_most_ms": 5.0, "p99_at_most_ms": 5.0}
    assert bucket_quantiles(after, after) == {}
