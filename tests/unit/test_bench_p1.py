"""The P1 scenario's CPU-priority run: notify and its store really get the lower priority,
and the table keeps the default run and the niced run apart."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from omniroute.bench.kit import bucket_quantiles
from omniroute.bench.p1 import lower_priority
from omniroute.bench.run import P1_NICED, render


def test_every_thread_of_the_process_gets_the_nice() -> None:
    # A child with a second thread: niceness is per thread on Linux.
    script = "import threading, time; threading.Thread(target=time.sleep, args=(30,)).start()"
    child = subprocess.Popen([sys.executable, "-c", script + "; time.sleep(30)"])
    try:
        deadline = time.monotonic() + 10
        while len(os.listdir(f"/proc/{child.pid}/task")) < 2:
            assert child.poll() is None and time.monotonic() < deadline, "no second thread"
            time.sleep(0.01)
        assert lower_priority({"notify": child}, 7) == {"notify": 7}
        tasks = [int(t) for t in os.listdir(f"/proc/{child.pid}/task")]
        assert [os.getpriority(os.PRIO_PROCESS, t) for t in tasks] == [7] * len(tasks)
    finally:
        child.kill()
        child.wait()


def p1_result(p50: float, niced: dict[str, int]) -> dict[str, Any]:
    figure = {"p50_ms": p50, "p95_ms": p50 * 2, "p99_ms": p50 * 3, "max_ms": p50 * 3}
    return {
        "backlog": 3000,
        "time_to_offer_after_agent_frees": figure,
        "resolve_call": figure,
        "decided_after_agent_frees": figure,
        "offer_after_decision": figure,
        "queued_after_arrival": figure,
        "acknowledgements_outstanding": {"first": 2000, "last": 1800, "min": 1800},
        "niced": niced,
        "load_average_at_start": [2.5, 1.0, 1.0],
        "load_average_at_end": [6.7, 2.0, 1.0],
    }


def test_the_table_names_which_run_had_priorities() -> None:
    machine = {"cpu": "x", "cores": 2, "memory_gib": 1, "python": "3", "date": "d"}
    table = render(
        {
            "machine": machine,
            "p1": p1_result(12.0, {}),
            P1_NICED: p1_result(8.0, {"notify": 10, "notify store": 10}),
        }
    )
    rows = [line for line in table.splitlines() if line.startswith("P1 time-to-offer")]
    assert len(rows) == 2
    assert "nice" not in rows[0] and "p50 12.0 ms" in rows[0]
    assert "notify and notify store at nice 10" in rows[1] and "p50 8.0 ms" in rows[1]
    assert all("load 2.5 → 6.7" in row for row in rows)


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
