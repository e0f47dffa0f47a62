"""`omniroute bench`: the real pipeline (four services as processes on the embedded stack)
under a generated multichannel load, next to the raw broker on the same machine.

Reports, as a table and as JSON: the broker baseline (batched produce and consume,
produce→consume round trip), sustained pipeline throughput (raw inbound → first routing
event), latency at fixed offered rates (a steady stream at 30 and 100 msg/s, and a burst
rate), P1 time-to-offer behind 10,000 queued tickets, P1 theft reports inbound → offered
during a 3,000-message surge, SLA firing lag with 10,000 timers, peak RSS per service, and
throughput at 1,000 vs 100,000 open tickets.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import statistics
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pymongo import MongoClient

from omniroute.bench.kit import (
    LEASE_GAUGES,
    EngineWatch,
    TicketWatcher,
    add_agents,
    ms,
    pct,
    produce,
)
from omniroute.bench.load import generate
from omniroute.bench.p1 import OWN_CPU, p1_behind_backlog
from omniroute.bench.profile import Profiler
from omniroute.bench.sla_lag import measure_firing_lag
from omniroute.bench.store_costs import measure_store_costs
from omniroute.bench.surge import p1_through_surge
from omniroute.system import LocalSystem
from shared.embedded import EmbeddedStack

# -- raw broker ---------------------------------------------------------------------------


async def broker_baseline(bootstrap: str, count: int = 50_000, size: int = 900) -> dict[str, Any]:
    topic = f"bench.raw.{uuid.uuid4().hex[:6]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 4, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    value = b"x" * size
    started = time.perf_counter()
    futures = [await producer.send(topic, value, key=str(i % 64).encode()) for i in range(count)]
    await asyncio.gather(*futures)
    produce_s = time.perf_counter() - started
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    parts = [TopicPartition(topic, p) for p in range(4)]
    consumer.assign(parts)
    await consumer.seek_to_beginning(*parts)
    got = 0
    started = time.perf_counter()
    while got < count:
        batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
        got += sum(len(v) for v in batch.values())
    consume_s = time.perf_counter() - started
    # Round trip, one record at a time.
    await consumer.seek_to_end(*parts)
    trips: list[float] = []
    for i in range(1000):
        sent = time.perf_counter()
        await producer.send_and_wait(topic, value, key=str(i).encode())
        while not await consumer.getmany(timeout_ms=1000, max_records=1):
            pass
        trips.append(time.perf_counter() - sent)
    await consumer.stop()
    await producer.stop()
    return {
        "produce_msgs_per_s": round(count / produce_s),
        "consume_msgs_per_s": round(count / consume_s),
        "round_trip": ms(trips),
        "record_bytes": size,
    }


# -- pipeline helpers ---------------------------------------------------------------------


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except FileNotFoundError:
        pass
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_ids(stack: EmbeddedStack, system: LocalSystem) -> dict[str, int]:
    pids = {n: s.proc.pid for n, s in system.services.items() if s.proc}
    # The broker, then each service's store (`secantusdb-router`, ...).
    return {**pids, **stack.processes}


async def idle_rates(processes: dict[str, int], seconds: float = 3.0) -> dict[str, float]:
    """CPU seconds per second each process uses with nothing to do (lease renewals, timers,
    and the consumers' empty fetches: with the embedded stack's 10 ms fetch wait, polling
    Tansu costs a steady share of a core)."""
    before = {n: cpu_seconds(pid) for n, pid in processes.items()}
    await asyncio.sleep(seconds)
    return {n: max(0.0, (cpu_seconds(pid) - before[n]) / seconds) for n, pid in processes.items()}


async def quiesce(
    processes: dict[str, int], idle_cpu_s: float = 0.15, timeout_s: float = 120.0
) -> float:
    """Wait until all processes together use under `idle_cpu_s` CPU seconds per second
    (their timers and lease renewals only), at most `timeout_s` (notify's outbox drains at
    tens per second on SecantusDB: see docs/benchmarks.md); returns the seconds waited."""
    started = time.monotonic()
    last = sum(cpu_seconds(pid) for pid in processes.values())
    while time.monotonic() - started < timeout_s:
        await asyncio.sleep(1.0)
        now = sum(cpu_seconds(pid) for pid in processes.values())
        if now - last < idle_cpu_s:
            break
        last = now
    return time.monotonic() - started


SERVICES_UNDER_TEST: tuple[str, ...] = ("ingest", "router", "sla", "notify")
PROFILE_DIR: Path | None = None  # --profile: py-spy during each measured phase


def profiler(phase: str, processes: dict[str, int]) -> Profiler | None:
    """A py-spy recording of `processes` for one phase, when --profile asked for it."""
    if PROFILE_DIR is None:
        return None
    prof = Profiler(PROFILE_DIR / phase, processes)
    prof.start()
    return prof


def wait_engines_active(system: LocalSystem, timeout_s: float) -> None:
    """Ready is not enough for an engine: its holder loads all open state before consuming
    (100,000 tickets take seconds), and a measurement must not time that load."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=5) as client:
        for name, gauge in LEASE_GAUGES.items():
            if name not in system.services:
                continue
            while f"{gauge} 1.0" not in client.get(f"{system.url(name)}/metrics").text:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} never became the active engine")
                time.sleep(0.1)


def new_system(stack: EmbeddedStack, name: str, work: Path) -> LocalSystem:
    system = LocalSystem(
        stack,
        log_dir=work / name,
        mongo_db=f"bench_{name}",
        # Notifications are sent (to notify's log, as in `omniroute dev`), not dead-lettered
        # for want of an adapter: the store does a send's work, as in production.
        env_overrides={"OMNIROUTE_NOTIFY_LOG_UNROUTED": "true"},
    )
    system.start(SERVICES_UNDER_TEST)
    system.wait_ready(timeout_s=120)
    wait_engines_active(system, timeout_s=300)
    return system


# -- scenarios ----------------------------------------------------------------------------


def steady_rates(spec: str) -> list[tuple[float, float]]:
    """`"30:60,100:30"` → [(30.0, 60.0), (100.0, 30.0)]: msg/s and for how many seconds."""
    out = []
    for item in filter(None, spec.split(",")):
        rate, sep, seconds = item.partition(":")
        try:
            pair = (float(rate), float(seconds))
        except ValueError:
            pair = (0.0, 0.0)
        if not sep or min(pair) <= 0:
            raise ValueError(f"{item!r}: expected RATE:SECONDS, both above zero (e.g. 30:60)")
        out.append(pair)
    return out


IDLE_BEFORE_STEADY_S = 300.0  # a steady stream is measured on an idle system


async def pipeline(
    stack: EmbeddedStack,
    work: Path,
    count: int,
    rate: float,
    rate_seconds: float,
    steady: list[tuple[float, float]] | None = None,
) -> dict[str, Any]:
    system = new_system(stack, "pipeline", work)
    try:
        add_agents(system.url("router"), 6)
        watcher = TicketWatcher(stack.kafka_bootstrap)
        await watcher.start()
        # Warm-up (first batches pay for connections and JIT-less imports).
        warm = generate(200, f"warm{uuid.uuid4().hex[:4]}")
        await produce(stack.kafka_bootstrap, warm)
        await watcher.wait_for([p.message_id for p in warm], 120)

        load = generate(count, f"tp{uuid.uuid4().hex[:4]}")
        processes = process_ids(stack, system)
        # Idle is as quiet as the system gets with nothing to do (its polling included).
        await quiesce(processes, timeout_s=60)
        idle = await idle_rates(processes)
        idle_cpu_s = 0.15 + sum(idle.values())
        cpu_before = {n: cpu_seconds(pid) for n, pid in processes.items()}
        profiles: dict[str, Any] = {}
        prof = profiler("pipeline-burst", processes)
        started = time.perf_counter()
        await produce(stack.kafka_bootstrap, load)
        done = await watcher.wait_for([p.message_id for p in load], 600)
        throughput = count / (done - started)
        # sla and notify are still working through the load when the last message is
        # routed; their work is part of a message's cost, so wait for the system to idle.
        drained_s = await quiesce(processes, idle_cpu_s=idle_cpu_s)
        if prof:
            profiles["burst"] = prof.stop()
        elapsed = time.perf_counter() - started
        # Where the time goes: CPU per message of every process, the store's included,
        # less what the process spends idle (polling) over the same time.
        cpu_ms_per_message = {
            n: round(
                max(0.0, cpu_seconds(pid) - cpu_before[n] - idle[n] * elapsed) * 1000 / count, 2
            )
            for n, pid in processes.items()
        }

        engine_urls = {n: system.url(n) for n in LEASE_GAUGES if n in system.services}

        async def latency_at(
            offered: float, seed: int, seconds: float = rate_seconds, idle_s: float = 120.0
        ) -> dict[str, Any]:
            # A backlog left by the previous phase is not latency.
            waited = await quiesce(processes, idle_cpu_s=idle_cpu_s, timeout_s=idle_s)
            paced = generate(
                max(1, round(offered * seconds)), f"lat{uuid.uuid4().hex[:4]}", seed=seed
            )
            prof = profiler(f"pipeline-{offered:g}-per-s", processes)
            async with EngineWatch(engine_urls) as engines:
                sent = await produce(stack.kafka_bootstrap, paced, rate=offered)
                await watcher.wait_for(sent, 600)
            if prof:
                profiles[f"{offered:g} msg/s"] = prof.stop()
            first, last = min(sent.values()), max(sent.values())
            by_window: dict[int, list[float]] = {}
            for m, t in sent.items():
                by_window.setdefault(int((t - first) // 10), []).append(watcher.routed_at[m] - t)
            return {
                "rate_msgs_per_s": offered,
                "seconds": seconds,
                # What the producer managed on this machine (a loaded one can lag the rate).
                "achieved_rate_msgs_per_s": round((len(sent) - 1) / (last - first), 1)
                if last > first
                else None,
                **ms([watcher.routed_at[m] - t for m, t in sent.items()]),
                # Stable if these stay flat; a rising p99 is a queue growing (above capacity).
                "p99_ms_by_10s": [
                    round(pct(v, 99) * 1000, 2) for _, v in sorted(by_window.items())
                ],
                "idle_wait_s": round(waited, 1),
                "started_idle": waited < idle_s,
                # Above zero: an engine lost its lease meanwhile (the figure includes that).
                "engines_not_consuming": engines.summary(),
            }

        result: dict[str, Any] = {
            "throughput_msgs_per_s": round(throughput),
            "messages": count,
            "cpu_ms_per_message": cpu_ms_per_message,
            # Subtracted from the above: each process's CPU share with nothing to do.
            "idle_cpu_s_per_s": {n: round(v, 3) for n, v in idle.items()},
            # How long sla and notify went on after the last message was routed.
            "downstream_drained_after_s": round(drained_s, 1),
        }
        # A steady stream of real-format messages at each rate, once the system is idle.
        result["latency_at_steady_rates"] = [
            await latency_at(r, 20 + i, seconds, IDLE_BEFORE_STEADY_S)
            for i, (r, seconds) in enumerate(steady or [])
        ]
        result["latency_at_rate"] = await latency_at(rate, 11)
        if throughput / 2 < rate:
            # Above capacity the latency is queueing time; at half the measured capacity it
            # shows what one message costs on its way through.
            result["latency_at_half_capacity"] = await latency_at(round(throughput / 2), 12)
        await watcher.stop()
        if profiles:
            result["profile"] = profiles
        result["peak_rss_mb"] = {
            n: peak_rss_mb(s.proc.pid) for n, s in system.services.items() if s.proc
        }
        return result
    finally:
        system.stop()


async def open_ticket_scaling(
    stack: EmbeddedStack, work: Path, sizes: tuple[int, ...], count: int, runs: int = 1
) -> dict[str, Any]:
    """Throughput with 1,000 vs 100,000 tickets open in the router's state: each size
    `runs` times, alternating (a slow minute of a shared machine then hits both), and the
    median of each size reported beside every run."""
    from pymongo import AsyncMongoClient

    from services.router.state.model import Ticket
    from services.router.store import MongoRouterStore, ticket_doc

    every: dict[str, list[int]] = {str(size): [] for size in sizes}
    for run, size in ((r, size) for r in range(runs) for size in sizes):
        name = f"open{size}r{run}"
        # Indexes first, as in a running deployment: building three indexes over 100,000
        # documents at service start holds SecantusDB's lock long enough for the other
        # services' start-up commands to time out.
        # The router's own database on its own store, as new_system will name it.
        router_uri, router_db = stack.mongo_uri("router"), f"bench_{name}_router"
        indexing: Any = AsyncMongoClient(router_uri, tz_aware=True)
        await MongoRouterStore(indexing[router_db]).ensure_indexes()
        await indexing.close()
        client: Any = MongoClient(router_uri, tz_aware=True)
        db = client[router_db]
        now = datetime.now(UTC)
        docs = []
        for i in range(size):
            t = Ticket(
                ticket_id=f"tkt_pre{i}",
                customer_id=f"cus_pre{i}",
                customer_tier="standard",
                channel="email",
                category="general",
                priority="P4",
                language="en",
                state="queued",
                opened_at=now,
                updated_at=now,
                waiting_since=now,
                conversation_ids=[f"cnv_pre{i}"],
                message_ids=[f"msg_pre{i}"],
                sequence=2,
            )
            docs.append(ticket_doc(t))
            if len(docs) == 5000:
                db.tickets.insert_many(docs)
                docs = []
        if docs:
            db.tickets.insert_many(docs)
        system = new_system(stack, name, work)
        try:
            watcher = TicketWatcher(stack.kafka_bootstrap)
            await watcher.start()
            load = generate(count, f"sc{size}{uuid.uuid4().hex[:4]}", seed=size)
            started = time.perf_counter()
            await produce(stack.kafka_bootstrap, load)
            done = await watcher.wait_for([p.message_id for p in load], 900)
            await watcher.stop()
            every[str(size)].append(round(count / (done - started)))
        finally:
            system.stop()
            client.close()
    return {
        "throughput_msgs_per_s_by_open_tickets": {
            size: round(statistics.median(v)) for size, v in every.items()
        },
        "runs": every,
        "messages": count,
    }


def machine() -> dict[str, Any]:
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem) / 1024**2, 1),
        "python": platform.python_version(),
        "os": platform.platform(),
        "date": datetime.now(UTC).date().isoformat(),
        # Other work on the machine: figures of a loaded run are not comparable to an idle one.
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
    }


SCENARIOS = ("broker", "store", "pipeline", "p1", "surge", "sla", "scaling")


async def run_scenario(name: str, args: Any, stack: EmbeddedStack, work: Path) -> Any:
    if name == "broker":
        return await broker_baseline(stack.kafka_bootstrap, count=args.broker_records)
    if name == "store":
        return await asyncio.to_thread(measure_store_costs, stack.mongo_uri("router"))
    if name == "pipeline":
        return await pipeline(
            stack,
            work,
            args.messages,
            args.rate,
            args.rate_seconds,
            steady_rates(args.latency_rates),
        )
    if name == "p1":
        system = new_system(stack, name, work)
        pids = process_ids(stack, system)
        prof = profiler(name, pids)
        try:
            # What a P1 offer passes through (the API and engine, the engine's store, the
            # broker, the desk that reads the offer: this process), for the samples taken
            # with them at real-time priority.
            p1_path = {n: pids[n] for n in ("router", "secantusdb-router", "tansu")}
            p1_path["desk (this benchmark)"] = os.getpid()
            at_start = [round(v, 2) for v in os.getloadavg()]
            result = await p1_behind_backlog(
                system, args.backlog, args.p1_samples, p1_path if args.p1_own_cpu else None
            )
            result = {
                **result,
                "load_average_at_start": at_start,
                "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
            }
        finally:
            profile = prof.stop() if prof else None
            system.stop()
        return {**result, "profile": profile} if profile else result
    if name == "surge":
        system = new_system(stack, "surge", work)
        prof = profiler("surge", process_ids(stack, system))
        try:
            result = await p1_through_surge(system, args.surge_messages, args.surge_reports)
        finally:
            profile = prof.stop() if prof else None
            system.stop()
        if profile:
            result["profile"] = profile
        result["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
        return result
    if name == "sla":
        return await measure_firing_lag(
            stack, timers=args.timers, target_s=args.sla_target_s, spread_s=args.sla_target_s / 5
        )
    sizes = tuple(int(s) for s in args.open_tickets.split(","))
    return await open_ticket_scaling(stack, work, sizes, args.scale_messages, args.scale_runs)


def run_all(args: Any, work: Path) -> dict[str, Any]:
    """Each scenario on a fresh stack: what one leaves in the store (an oplog of 100,000
    entries, a database being dropped) must not slow the next one down."""
    wanted = [s for s in args.scenarios.split(",") if s]
    if unknown := set(wanted) - set(SCENARIOS):
        raise SystemExit(f"unknown scenarios: {sorted(unknown)}; choose from {SCENARIOS}")
    results: dict[str, Any] = {"machine": machine()}
    for name in (s for s in SCENARIOS if s in wanted):
        data_dir = work / f"stack-{name}"
        # The stack starts outside the event loop (its readiness probes run their own loops).
        with EmbeddedStack(data_dir=data_dir) as stack:
            results[name] = asyncio.run(run_scenario(name, args, stack, work))
        shutil.rmtree(data_dir / "mongo", ignore_errors=True)  # GBs after 100,000 tickets
        if args.json:  # partial results survive an interrupted run
            Path(args.json).write_text(json.dumps(results, indent=2))
    return results


def _percentiles(d: dict[str, Any]) -> str:
    return f"p50 {d['p50_ms']} ms, p95 {d['p95_ms']} ms, p99 {d['p99_ms']} ms"


def _load(result: dict[str, Any]) -> str:
    """`; load 2.5 → 6.7`: the 1-minute load average when the scenario started and ended."""
    start, end = result.get("load_average_at_start"), result.get("load_average_at_end")
    return f"; load {start[0]} → {end[0]}" if start and end else ""


def _p1_rows(
    title: str, figures: dict[str, Any], after: str, arrival: bool = True
) -> list[tuple[str, str]]:
    """The P1 figure of one kind of sample and where its time went (and, with `arrival`,
    how long its P1 took to be queued: before the window, so at normal priority always)."""
    rows = [
        (title, f"{_percentiles(figures['time_to_offer_after_agent_frees'])}{after}"),
        (
            "P1 split, p50: resolve call / decided after it / offer after the decision",
            " / ".join(
                str(figures[k]["p50_ms"])
                for k in ("resolve_call", "decided_after_agent_frees", "offer_after_decision")
            )
            + " ms",
        ),
    ]
    if arrival:
        rows.append(
            ("P1 arrival → queued, same samples", _percentiles(figures["queued_after_arrival"]))
        )
    return rows


def _outages(engines: dict[str, dict[str, float]]) -> str:
    """For each engine that lost its lease: `; router lost its lease 2× (8.5 s not consuming)`."""
    return "".join(
        f"; {n} lost its lease {e['lost']}× ({e['inactive_s']} s not consuming)"
        for n, e in engines.items()
        if e["lost"] or e["inactive_s"]
    )


def _hot(summary: dict[str, Any], top: int = 3) -> str:
    if "error" in summary:
        return f"not profiled: {summary['error']}"
    hot = summary["own_code"][:top] or summary["self"][:top]
    busy = ", ".join(f"{h['function']} {h['share']:.0%}" for h in hot)
    return f"{busy} (idle {summary['idle']:.0%})"


def render(results: dict[str, Any]) -> str:
    """The table: one row per figure, for whichever scenarios ran."""
    m = results["machine"]
    rows = [
        (
            "machine",
            f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
            f"Python {m['python']}, {m['date']}",
        )
    ]
    if b := results.get("broker"):
        rows += [
            (
                "broker: batched produce",
                f"{b['produce_msgs_per_s']:,} msg/s ({b['record_bytes']} B)",
            ),
            ("broker: batched consume", f"{b['consume_msgs_per_s']:,} msg/s"),
            ("broker: produce→consume round trip", _percentiles(b["round_trip"])),
        ]
    if store := results.get("store"):
        rows.append(("store: ms per document", ", ".join(f"{k} {v}" for k, v in store.items())))
    if p := results.get("pipeline"):
        lat = p["latency_at_rate"]
        rows.append(
            (
                "pipeline: raw inbound → routed (sustained)",
                f"{p['throughput_msgs_per_s']:,} msg/s over {p['messages']:,} messages",
            )
        )
        for steady in p.get("latency_at_steady_rates", []):
            rows.append(
                (
                    f"pipeline: latency at {steady['rate_msgs_per_s']:g} msg/s, "
                    f"{steady['seconds']:g} s steady",
                    f"{_percentiles(steady)} (offered {steady['achieved_rate_msgs_per_s']} "
                    f"msg/s{'' if steady['started_idle'] else '; the system was not idle first'}"
                    f"{_outages(steady['engines_not_consuming'])})",
                )
            )
        rows.append((f"pipeline: latency at {lat['rate_msgs_per_s']:.0f} msg/s", _percentiles(lat)))
        if half := p.get("latency_at_half_capacity"):
            rows.append(
                (
                    f"pipeline: latency at {half['rate_msgs_per_s']:.0f} msg/s (half capacity)",
                    _percentiles(half),
                )
            )
        rows += [
            (
                "CPU per message (ms)",
                ", ".join(f"{k} {v}" for k, v in p["cpu_ms_per_message"].items()),
            ),
            ("peak RSS (MiB)", ", ".join(f"{k} {v}" for k, v in p["peak_rss_mb"].items())),
        ]
    if p1 := results.get("p1"):
        acks = p1["acknowledgements_outstanding"]
        behind = f"P1 time-to-offer behind {p1['backlog']:,} queued"
        load = f"notify with {acks['first']:,} → {acks['last']:,} acknowledgements still to send"
        own = p1.get(OWN_CPU) or {}
        rows += _p1_rows(f"{behind}, CPUs shared", p1, f" ({load}{_load(p1)})")
        if "refused" in own:
            rows.append(
                (f"{behind}, P1 path at real-time priority", f"not measured: {own['refused']}")
            )
        elif own:
            path = ", ".join(own["processes"])
            title = f"{behind}, {path} at real-time priority (stand-in for CPUs of their own)"
            rows += _p1_rows(title, own, "", arrival=False)
    if surge := results.get("surge"):
        offers = surge["inbound_to_offered"]
        rows += [
            (
                f"surge: P1 report inbound → offered, {surge['reports']} behind "
                f"{surge['surge']:,} messages",
                f"{_percentiles(offers)}, max {offers['max_ms']} ms; "
                f"{surge['within_target']} of {surge['reports']} within "
                f"{surge['target_ms']:.0f} ms{_outages(surge['engines_not_consuming'])}",
            ),
            (
                "surge: each report, ms (surge unrouted at send → at offer)",
                ", ".join(
                    f"{r['inbound_to_offered_ms']:.0f} ({r['surge_unrouted_at_send']:,} → "
                    f"{r['surge_unrouted_at_offer']:,})"
                    for r in surge["samples"]
                ),
            ),
            (
                "surge: the surge itself",
                f"{surge['surge']:,} routed {surge['surge_routed_after_s']} s after publishing "
                f"began; {', '.join(f'{k} {v:,}' for k, v in surge['surge_priorities'].items())}",
            ),
        ]
    if sla := results.get("sla"):
        rows.append(
            (
                f"SLA firing lag, {sla['active_timers']:,} timers",
                f"{_percentiles(sla)}; fired {sla['thresholds_fired']:,} of "
                f"{sla['thresholds_expected']:,}, {sla['duplicates']} duplicates",
            )
        )
    if sc := results.get("scaling"):
        rows.append(
            (
                "throughput by open tickets (median of runs)",
                ", ".join(
                    f"{k}: {v:,} msg/s ({', '.join(map(str, sc.get('runs', {}).get(k, [])))})"
                    for k, v in sc["throughput_msgs_per_s_by_open_tickets"].items()
                ),
            )
        )
    for scenario in ("pipeline", "p1", "surge"):
        phases = (results.get(scenario) or {}).get("profile") or {}
        if scenario != "pipeline":
            phases = {scenario: phases} if phases else {}
        for phase, procs in phases.items():
            for proc, summary in procs.items():
                rows.append((f"profile: {phase}, {proc} (share of busy samples)", _hot(summary)))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="omniroute bench", description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--rate-seconds", type=float, default=10.0)
    parser.add_argument(
        "--latency-rates",
        default="30:60,100:30",
        help="the pipeline's steady streams, RATE:SECONDS comma-separated (msg/s for seconds)",
    )
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--p1-samples", type=int, default=50)
    parser.add_argument(
        "--p1-own-cpu",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also take --p1-samples samples, alternating with the others, with the P1 path "
        "(router, its store, the broker, the desk) at real-time priority: the stand-in for the "
        "CPU a deployment gives it (needs CAP_SYS_NICE; the results say when refused)",
    )
    parser.add_argument(
        "--surge-messages", type=int, default=3000, help="the surge scenario's ordinary questions"
    )
    parser.add_argument(
        "--surge-reports",
        type=int,
        default=10,
        help="theft reports sent while the surge is processed (each one measured)",
    )
    parser.add_argument("--timers", type=int, default=10_000)
    parser.add_argument(
        "--sla-target-s",
        type=float,
        default=30.0,
        help="response target of the SLA scenario's tickets (thresholds fall due after it)",
    )
    parser.add_argument("--open-tickets", default="1000,100000")
    parser.add_argument("--scale-messages", type=int, default=3000)
    parser.add_argument(
        "--scale-runs", type=int, default=3, help="runs per open-ticket size (median reported)"
    )
    parser.add_argument("--broker-records", type=int, default=50_000)
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"which to run, comma-separated (default all: {','.join(SCENARIOS)})",
    )
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="record every Python process with py-spy during each measured phase (raw stacks"
        " in DIR, a summary in the results); profiling costs CPU, so the figures of such a run"
        " are not the ones to quote",
    )
    parser.add_argument("--work-dir", default=None)
    parser.add_argument(
        "--services",
        default="ingest,router,sla,notify",
        help="which services run (all four by default)",
    )
    args = parser.parse_args(argv)
    try:
        steady_rates(args.latency_rates)
    except ValueError as exc:
        parser.error(f"--latency-rates: {exc}")
    if args.surge_messages < 1 or args.surge_reports < 1:
        parser.error("--surge-messages and --surge-reports must be at least 1")
    global SERVICES_UNDER_TEST, PROFILE_DIR
    SERVICES_UNDER_TEST = tuple(args.services.split(","))
    PROFILE_DIR = Path(args.profile).resolve() if args.profile else None
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))  # noqa: S108 - the user's temp dir
    work = Path(args.work_dir) if args.work_dir else tmp / f"omniroute-bench-{uuid.uuid4().hex[:6]}"
    results = run_all(args, work)
    print(render(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
