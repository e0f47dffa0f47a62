"""`omniroute bench` from the installed command: every figure of issue 8, at toy sizes.

The figures themselves are measured by running the benchmark (docs/benchmarks.md); this
proves the command runs on a fresh clone and reports every one of them.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_bench_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "omniroute.cli",
            "bench",
            "--messages=150",
            "--rate=40",
            "--rate-seconds=2",
            "--backlog=600",  # notify still sends its acknowledgements during the samples
            "--p1-samples=3",
            "--timers=100",
            "--sla-target-s=4",
            "--open-tickets=50,500",
            "--scale-messages=60",
            "--broker-records=2000",
            f"--work-dir={tmp_path / 'work'}",
            f"--json={out}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    r = json.loads(out.read_text())

    assert r["machine"]["cores"] >= 1 and r["machine"]["cpu"]
    broker = r["broker"]
    assert positive(broker["produce_msgs_per_s"]) and positive(broker["consume_msgs_per_s"])
    assert positive(broker["round_trip"]["p50_ms"]) and positive(broker["round_trip"]["p99_ms"])
    store = r["store"]
    assert set(store) >= {"insert", "update_set", "lookup_indexed_in", "lookup_or_elemmatch"}
    assert all(positive(v) for v in store.values())
    pipeline = r["pipeline"]
    assert positive(pipeline["throughput_msgs_per_s"]) and pipeline["messages"] == 150
    latency = pipeline["latency_at_rate"]
    assert latency["samples"] == 80  # 40 msg/s for 2 s: every paced message was routed
    assert all(positive(latency[k]) for k in ("p50_ms", "p95_ms", "p99_ms"))
    assert set(pipeline["peak_rss_mb"]) == {"ingest", "router", "sla", "notify"}
    cpu = pipeline["cpu_ms_per_message"]
    stores = {f"secantusdb-{s}" for s in ("ingest", "router", "sla", "notify")}
    assert set(cpu) == {"ingest", "router", "sla", "notify", "tansu", *stores}
    assert positive(cpu["ingest"]) and positive(cpu["secantusdb-router"])
    assert all(positive(v) for v in pipeline["peak_rss_mb"].values())
    p1 = r["p1"]
    offer = p1["time_to_offer_after_agent_frees"]
    assert p1["backlog"] == 600 and offer["samples"] == 3 and positive(offer["p99_ms"])
    # Behind lower tickets only: the P1 of each sample was the best waiting ticket.
    assert set(p1["backlog_priorities"]) <= {"P2", "P3", "P4"}, p1["backlog_priorities"]
    assert sum(p1["backlog_priorities"].values()) == 600
    # Sampled while notify still had backlog acknowledgements to send (not after it went
    # quiet, which would hide its contention), and each sample timed the offer of its own P1.
    rows = p1["samples"]
    assert len(rows) == 3 and all(row["acknowledgements_outstanding"] > 0 for row in rows), rows
    assert p1["acknowledgements_outstanding"]["first"] <= 600
    assert all(0 < row["decided_after_ms"] <= row["time_to_offer_ms"] for row in rows), rows
    sla = r["sla"]
    assert sla["thresholds_fired"] == sla["thresholds_expected"] == 200, sla
    assert sla["active_timers"] == 200 and sla["duplicates"] == 0, sla
    assert positive(sla["p99_ms"])
    scaling = r["scaling"]["throughput_msgs_per_s_by_open_tickets"]
    assert set(scaling) == {"50", "500"} and all(positive(v) for v in scaling.values())

    table = run.stdout
    for row in (
        "broker: batched produce",
        "store: ms per document",
        "pipeline: latency at",
        "P1 time-to-offer",
        "SLA firing lag",
        "throughput by open tickets",
        "peak RSS",
    ):
        assert row in table, table
