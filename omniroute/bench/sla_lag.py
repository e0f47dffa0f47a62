"""SLA firing lag at N active timers: the real sla service, as its own process, on the
embedded stack.

N tickets are opened on `support.tickets` (one `opened` event each, keyed by ticket id) under
a short test policy: every first-response target is `target_s`, the warning at
`warning_ratio` of it. The tickets' opening times are spread evenly over the `spread_s`
seconds before they are produced, so their 2N thresholds fall due one after another: the
warnings over `spread_s` seconds from `warning_ratio * target_s - spread_s` after
producing, the breaches over the `spread_s` seconds up to `target_s` after it. The default
target leaves the engine time to take all N tickets in first (it then holds 2N active
timers: first response and resolution), so the figures are the firing path's, at that
size; `first_threshold_after_ingest_s` says by how much (negative: firing overlapped the
intake of the tickets, and the lag includes waiting behind it). For every warning and
breach on `support.sla`:

    lag = Kafka record timestamp (set when the engine hands the event to its producer)
          - the threshold's time (`threshold_at`: the warning time, or the due time)

`python -m omniroute.bench.sla_lag [--timers N]` prints the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from omniroute.system import LocalSystem
from services.router.handlers import ticket_event
from shared.contracts.common import CHANNELS, Channel, Priority
from shared.contracts.tickets import TicketEvent
from shared.embedded import EmbeddedStack
from shared.settings import REPO_POLICY_DIR
from shared.topics import SLA, TICKETS

PRIORITIES: tuple[Priority, ...] = ("P1", "P2", "P3", "P4")
THRESHOLDS = ("omniroute.sla.warning.v1", "omniroute.sla.breached.v1")
STARTED = "omniroute.sla.started.v1"


def write_policy_dir(
    path: Path, first_response_s: float, warning_ratio: float = 0.75, source: Path | None = None
) -> Path:
    """A copy of every policy file, with an sla.yaml whose first-response target is short."""
    path.mkdir(parents=True, exist_ok=True)
    for f in sorted((source or REPO_POLICY_DIR).glob("*.yaml")):
        shutil.copy(f, path / f.name)
    targets = {
        p: {"first_response_s": first_response_s, "next_response_s": 3600, "resolution_s": 86400}
        for p in PRIORITIES
    }
    policy = {"warning_ratio": warning_ratio, "targets": targets}
    (path / "sla.yaml").write_text(yaml.safe_dump(policy, sort_keys=False), "utf-8")
    return path


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def opened(ticket_id: str, i: int, at: datetime) -> TicketEvent:
    channel: Channel = CHANNELS[i % len(CHANNELS)]
    return TicketEvent(
        ticket_id=ticket_id,
        event="opened",
        priority=PRIORITIES[i % len(PRIORITIES)],
        category="general",
        channel=channel,
        customer_id=f"cus_bench_{i}",
        language="en",
        at=at,
        state="queued",
        opened_at=at,
        sequence=1,
    )


async def _consumer(bootstrap: str) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20
    )
    await consumer.start()
    parts = [TopicPartition(SLA, p) for p in sorted(consumer.partitions_for_topic(SLA) or ())]
    if not parts:
        await consumer._client.force_metadata_update()
        parts = [TopicPartition(SLA, p) for p in sorted(consumer.partitions_for_topic(SLA) or ())]
    consumer.assign(parts)
    await consumer.seek_to_end(*parts)
    for tp in parts:
        await consumer.position(tp)  # resolve the end now, before anything is produced
    return consumer, parts


async def measure_firing_lag(
    stack: EmbeddedStack,
    timers: int = 10_000,
    *,
    target_s: float = 30.0,
    spread_s: float = 6.0,
    warning_ratio: float = 0.75,
    work_dir: Path | None = None,  # kept (policy, service log) if given; else temporary
    timeout_s: float = 180.0,
) -> dict[str, float]:
    """Open `timers` tickets (2 x `timers` active timers); measure every warning and breach.

    Returns lag percentiles in milliseconds (by Kafka record timestamp, and by the time this
    process consumed the event), counts, and how long the engine took to take the tickets in.
    """
    run = uuid.uuid4().hex[:8]
    work = work_dir or Path(tempfile.mkdtemp(prefix="omniroute-sla-bench-"))
    policy_dir = write_policy_dir(work / "policy", target_s, warning_ratio)
    system = LocalSystem(
        stack,
        log_dir=work / "logs",
        env_overrides={"OMNIROUTE_POLICY_DIR": str(policy_dir)},
        mongo_db=f"bench_sla_{run}",
    )
    consumer, _ = await _consumer(stack.kafka_bootstrap)
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        system.start(("sla",))
        await asyncio.to_thread(system.wait_ready, 60.0)
        ids = [f"tkt_bench_{run}_{i}" for i in range(timers)]
        produced_at = datetime.now(UTC)
        step = timedelta(seconds=spread_s) / max(1, timers)
        started_clock = time.monotonic()
        for i, tid in enumerate(ids):
            event = ticket_event(
                opened(tid, i, produced_at - timedelta(seconds=spread_s) + i * step)
            )
            await producer.send(
                TICKETS,
                event.value,
                key=tid.encode(),
                headers=[(k, v.encode()) for k, v in event.headers.items()],
            )
        await producer.flush()
        produce_s = time.monotonic() - started_clock

        wanted = set(ids)
        started = 0
        ingested_at: float | None = None
        lags: dict[str, list[float]] = {t: [] for t in THRESHOLDS}
        consumed_lags: list[float] = []
        seen: dict[str, int] = {}
        first_threshold: datetime | None = None
        deadline = time.monotonic() + timeout_s
        while sum(len(v) for v in lags.values()) < 2 * timers and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            now = time.time()
            for records in batch.values():
                for r in records:
                    headers = {k: v.decode() for k, v in r.headers or ()}
                    ce_type = headers.get("ce_type", "")
                    if ce_type not in THRESHOLDS and ce_type != STARTED:
                        continue
                    data: dict[str, Any] = json.loads(r.value)
                    if data["ticket_id"] not in wanted or data["metric"] == "next_response":
                        continue
                    if ce_type == STARTED:
                        started += 1
                        if started == 2 * timers:
                            ingested_at = time.monotonic()
                        continue
                    if data["metric"] != "first_response":
                        continue
                    seen[headers["ce_id"]] = seen.get(headers["ce_id"], 0) + 1
                    if seen[headers["ce_id"]] > 1:
                        continue
                    threshold = datetime.fromisoformat(data["threshold_at"])
                    if first_threshold is None or threshold < first_threshold:
                        first_threshold = threshold
                    lags[ce_type].append(r.timestamp / 1000 - threshold.timestamp())
                    consumed_lags.append(now - threshold.timestamp())
        every = lags[THRESHOLDS[0]] + lags[THRESHOLDS[1]]
        ingest_s = (ingested_at - started_clock) if ingested_at else float("nan")
        # first threshold relative to the moment the engine held every timer (>0: after)
        margin_s = (
            (first_threshold - produced_at).total_seconds() - ingest_s
            if first_threshold is not None
            else float("nan")
        )

        def ms(values: list[float], q: float) -> float:
            return round(percentile(values, q) * 1000, 2)

        return {
            "tickets": timers,
            "active_timers": 2 * timers,
            "thresholds_expected": 2 * timers,
            "thresholds_fired": len(every),
            "duplicates": sum(n - 1 for n in seen.values()),
            "produce_s": round(produce_s, 2),
            "ingest_s": round(ingest_s, 2),
            "first_threshold_after_ingest_s": round(margin_s, 2),
            "fire_window_s": round(spread_s, 1),
            "p50_ms": ms(every, 50),
            "p95_ms": ms(every, 95),
            "p99_ms": ms(every, 99),
            "max_ms": round(max(every) * 1000, 2) if every else float("nan"),
            "warning_p99_ms": ms(lags[THRESHOLDS[0]], 99),
            "breach_p99_ms": ms(lags[THRESHOLDS[1]], 99),
            "consumed_p50_ms": ms(consumed_lags, 50),
            "consumed_p99_ms": ms(consumed_lags, 99),
        }
    finally:
        await producer.stop()
        await consumer.stop()
        # The database stays: the stack is the caller's to discard (dropping 20,000 timers
        # and their journal took SecantusDB minutes).
        system.stop()
        if work_dir is None:  # ours: the policy copy and the service's log
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m omniroute.bench.sla_lag", description=__doc__)
    parser.add_argument("--timers", type=int, default=10_000, help="tickets (2 timers each)")
    parser.add_argument("--target-s", type=float, default=30.0, help="first-response target")
    parser.add_argument("--spread-s", type=float, default=6.0, help="thresholds spread over")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)
    with EmbeddedStack() as stack:
        result = asyncio.run(
            measure_firing_lag(stack, args.timers, target_s=args.target_s, spread_s=args.spread_s)
        )
    if args.json:
        print(json.dumps(result))
    else:
        width = max(len(k) for k in result)
        for k, v in result.items():
            print(f"{k.ljust(width)}  {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
