"""What the benchmark's scenarios share: percentiles, topic followers, the load's producer
and the agents' desk."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from omniroute.bench.load import Payload
from omniroute.system import DEV_TOKEN
from shared.topics import TICKETS

AUTH = {"Authorization": f"Bearer {DEV_TOKEN}"}
ROUTED = {"offered", "assigned", "queued"}
LEASE_GAUGES = {"router": "omniroute_router_lease_holder", "sla": "omniroute_sla_lease_holder"}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def ms(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(pct(values, 50) * 1000, 2),
        "p95_ms": round(pct(values, 95) * 1000, 2),
        "p99_ms": round(pct(values, 99) * 1000, 2),
        "max_ms": round(max(values) * 1000, 2) if values else float("nan"),
        "samples": len(values),
    }


async def histogram_buckets(url: str, name: str) -> dict[str, dict[float, float]]:
    """A Prometheus histogram's cumulative bucket counts by its one label, from `url`/metrics."""
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"{url}/metrics")).text
    out: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                label = next(v for k, v in sample.labels.items() if k != "le")
                out.setdefault(label, {})[float(sample.labels["le"])] = sample.value
    return out


def bucket_quantiles(
    before: Mapping[str, Mapping[float, float]], after: Mapping[str, Mapping[float, float]]
) -> dict[str, dict[str, float]]:
    """Per label, the observations between two scrapes and the upper bounds (ms) of the
    buckets holding their p50 and p99: a histogram tells which bucket, not the value."""
    out: dict[str, dict[str, float]] = {}
    for label, buckets in after.items():
        counts = {le: n - before.get(label, {}).get(le, 0.0) for le, n in buckets.items()}
        total = counts.get(float("inf"), 0.0)
        if not total:
            continue
        row: dict[str, float] = {"count": total}
        for q in (50, 99):
            le = next(le for le in sorted(counts) if counts[le] >= total * q / 100)
            row[f"p{q}_at_most_ms"] = round(le * 1000, 2) if le != float("inf") else le
        out[label] = row
    return out


class Follower:
    """Follows a topic from its current end in the background; `take` sees each record's
    JSON value with the time it arrived here (perf_counter)."""

    def __init__(self, bootstrap: str, topic: str, fetch_max_wait_ms: int = 10) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()

    def take(self, value: dict[str, Any], now: float) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        # Short fetch waits: Tansu holds an empty fetch for the whole wait (500 ms by
        # default; Kafka answers when a record arrives), which would be timed as the
        # pipeline's latency: up to `fetch_max_wait_ms` of every figure is this poll.
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
        )
        await self._consumer.start()
        parts = [
            TopicPartition(self.topic, p)
            for p in sorted(self._consumer.partitions_for_topic(self.topic) or range(4))
        ]
        self._consumer.assign(parts)
        await self._consumer.seek_to_end(*parts)
        for tp in parts:
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            now = time.perf_counter()
            for records in batch.values():
                for r in records:
                    self.take(json.loads(r.value), now)
            if batch:
                self._arrived.set()

    async def wait_until(self, done: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Until `done()` holds after the records seen so far, at most `timeout_s`."""
        deadline = time.perf_counter() + timeout_s
        while not done():
            if self._task is not None and self._task.done():
                self._task.result()  # the follower failed: say why
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError(what)
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(left, 1.0))

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer:
            await self._consumer.stop()


class TicketWatcher(Follower):
    """Follows support.tickets; notes when each message is first routed."""

    def __init__(self, bootstrap: str, fetch_max_wait_ms: int = 10) -> None:
        super().__init__(bootstrap, TICKETS, fetch_max_wait_ms)
        self.routed_at: dict[str, float] = {}

    def take(self, value: dict[str, Any], now: float) -> None:
        mid = value.get("message_id")
        if value["event"] in ROUTED and mid and mid not in self.routed_at:
            self.routed_at[mid] = now

    async def wait_for(self, ids: Iterable[str], timeout_s: float) -> float:
        wanted = set(ids)
        try:
            await self.wait_until(lambda: wanted <= self.routed_at.keys(), timeout_s, "")
        except TimeoutError:
            missing = len(wanted - self.routed_at.keys())
            raise TimeoutError(f"{missing} of {len(wanted)} messages not routed") from None
        return max(self.routed_at[i] for i in wanted)


async def produce(
    bootstrap: str, payloads: list[Payload], rate: float | None = None
) -> dict[str, float]:
    """Publish raw payloads as adapters would; returns send time per message id."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=2, acks="all", max_request_size=4_194_304
    )
    await producer.start()
    sent: dict[str, float] = {}
    futures = []
    started = time.perf_counter()
    for i, p in enumerate(payloads):
        if rate:
            due = started + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        sent[p.message_id] = time.perf_counter()
        futures.append(
            await producer.send(
                p.topic, p.raw, key=p.key, headers=[("provider", p.provider.encode())]
            )
        )
    await asyncio.gather(*futures)
    await producer.stop()
    return sent


def add_agents(
    router_url: str,
    count: int,
    online: bool = True,
    capacity: int | Mapping[str, int] = 5,
    skills: Sequence[str] = (),
) -> list[str]:
    """Agents speaking both languages, auto-accepting; `capacity`: per channel, or one
    figure for chat, email and social (phone one at a time); `skills`: the categories they
    take (none: every category)."""
    per_channel = (
        dict(capacity)
        if isinstance(capacity, Mapping)
        else {"chat": capacity, "email": capacity, "social": capacity, "phone": 1}
    )
    ids = []
    with httpx.Client(timeout=10) as client:
        for i in range(count):
            aid = f"bench-agent-{i}"
            client.put(
                f"{router_url}/v1/agents/{aid}",
                headers=AUTH,
                json={
                    "name": f"Agent {i}",
                    "languages": ["en", "zh"],
                    "auto_accept": True,
                    "capacity": per_channel,
                    "skills": list(skills),
                },
            ).raise_for_status()
            client.post(
                f"{router_url}/v1/agents/{aid}/presence",
                headers=AUTH,
                json={"status": "online" if online else "offline"},
            ).raise_for_status()
            ids.append(aid)
    return ids


class EngineWatch:
    """Polls each engine's lease gauge while a measurement runs. On a loaded machine an engine
    can lose its lease (a renewal waiting on the store past its bound) and stop consuming
    while it reloads: a figure taken meanwhile measures that takeover, and says so."""

    def __init__(self, urls: Mapping[str, str], interval_s: float = 0.5) -> None:
        self.urls = {n: u for n, u in urls.items() if n in LEASE_GAUGES}  # engine -> base URL
        self.interval_s = interval_s
        self.inactive_s = dict.fromkeys(self.urls, 0.0)
        self.lost = dict.fromkeys(self.urls, 0)  # times seen going from active to not
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        active = dict.fromkeys(self.urls, True)
        last = time.perf_counter()
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                for name, url in self.urls.items():
                    try:
                        reply = await client.get(f"{url}/metrics")
                    except httpx.HTTPError:
                        continue  # too busy to answer: not evidence either way
                    now_active = f"{LEASE_GAUGES[name]} 1.0" in reply.text
                    if active[name] and not now_active:
                        self.lost[name] += 1
                    active[name] = now_active
                now = time.perf_counter()
                for name, is_active in active.items():
                    if not is_active:
                        self.inactive_s[name] += now - last
                last = now
                await asyncio.sleep(self.interval_s)  # a poll interval, not a synchronisation

    def summary(self) -> dict[str, dict[str, float]]:
        """Per engine: seconds seen not consuming and how often it lost its lease."""
        return {
            n: {"inactive_s": round(self.inactive_s[n], 1), "lost": self.lost[n]} for n in self.urls
        }

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def __aenter__(self) -> EngineWatch:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
