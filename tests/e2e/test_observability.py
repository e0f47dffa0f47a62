"""Observability on the running system: the four services as processes (LocalSystem on
the session's embedded stack), a little traffic, then

- `promtool check metrics` on every service's /metrics;
- a real Prometheus (Debian's `prometheus`, on a free loopback port, its data in a
  temporary directory, stopped at the end) scrapes them with deploy/prometheus/rules.yml
  loaded, and every alert and every dashboard expression evaluates without error;
- every metric name the alerts and the dashboard reference is one a service exports.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiokafka import AIOKafkaProducer

from omniroute.samples import chat_message
from omniroute.system import DEV_SECRET, DEV_TOKEN, SERVICES, LocalSystem
from services.ingest.http import SIGNATURE_HEADER, sign
from shared.embedded import free_port, spawn, stop_process
from shared.topics import INBOUND_CHAT
from tests.support.monitoring import (
    DASHBOARD,
    RULES,
    alert_queries,
    dashboard_queries,
    exported_names,
    missing_names,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": f"Bearer {DEV_TOKEN}"}
SCRAPE_INTERVAL = "1s"


# --- the system, with a little traffic ----------------------------------------------------


def metrics_page(system: LocalSystem, name: str) -> str:
    return httpx.get(f"{system.url(name)}/metrics", timeout=5).text


def has_sample(page: str, prefix: str) -> bool:
    return any(line.startswith(prefix) for line in page.splitlines())


def counted(system: LocalSystem, name: str, prefix: str) -> Callable[[], bool]:
    """A probe: `name`'s /metrics has a sample starting with `prefix`."""
    return lambda: has_sample(metrics_page(system, name), prefix)


@pytest.fixture(scope="module")
def traffic(system: LocalSystem) -> None:
    """An agent online, a P1 chat message routed to them, a malformed record dead-lettered."""
    router = system.url("router")
    agent = f"agent-{uuid.uuid4().hex[:8]}"
    profile = {"name": "Ops", "languages": ["en"], "capacity": {"chat": 2}, "auto_accept": True}
    assert httpx.put(f"{router}/v1/agents/{agent}", json=profile, headers=AUTH).status_code == 202
    online = httpx.post(
        f"{router}/v1/agents/{agent}/presence", json={"status": "online"}, headers=AUTH
    )
    assert online.status_code == 202

    session = f"s-{uuid.uuid4().hex[:8]}"
    body = chat_message(session, "m-1", "My account was hacked, BTC withdrawn!", visitor_id=session)
    reply = httpx.post(
        f"{system.url('ingest')}/v1/inbound/chat/generic",
        content=body,
        headers={"content-type": "application/json", SIGNATURE_HEADER: sign(DEV_SECRET, body)},
        timeout=10,
    )
    assert reply.status_code == 202, reply.text

    async def send_garbage() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=system.stack.kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(
                INBOUND_CHAT, b"{not json", key=b"garbage", headers=[("provider", b"generic")]
            )
        finally:
            await producer.stop()

    asyncio.run(send_garbage())

    # Each service has counted its part: routed, timed, notified, dead-lettered.
    for name, sample in (
        ("router", 'omniroute_router_ticket_events_total{event="assigned"'),
        ("sla", "omniroute_sla_events_total{"),
        ("notify", "omniroute_notify_notifications_total{"),
        ("ingest", "omniroute_ingest_deadletters_total{"),
    ):
        wait_until(counted(system, name, sample), 30, sample)


@pytest.fixture(scope="module")
def pages(system: LocalSystem, traffic: None) -> dict[str, str]:
    return {name: metrics_page(system, name) for name in SERVICES}


def test_every_service_passes_promtool_check_metrics(pages: dict[str, str]) -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    problems = {}
    for name, page in pages.items():
        run = subprocess.run(
            ["promtool", "check", "metrics"],
            input=page,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if run.returncode != 0 or run.stdout.strip() or run.stderr.strip():
            problems[name] = (run.stdout + run.stderr).strip()
    assert problems == {}


def test_alerts_and_dashboard_reference_only_exported_metrics(pages: dict[str, str]) -> None:
    exported = set().union(*(exported_names(page) for page in pages.values()))
    report = []
    for what, queries in (
        (RULES.relative_to(RULES.parents[2]), alert_queries()),
        (DASHBOARD.relative_to(DASHBOARD.parents[2]), dashboard_queries()),
    ):
        for name, used_by in sorted(missing_names(queries, exported).items()):
            report.append(f"{name}  ({what}: {'; '.join(used_by)})")
    assert not report, "metric names no service exports:\n" + "\n".join(report)


# --- a real Prometheus scraping them ------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus(system: LocalSystem, traffic: None, tmp_path_factory: Any) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed (Debian package prometheus)")
    work: Path = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(RULES)],
        # Job names as the ServiceMonitors and docker-compose.yml give them.
        "scrape_configs": [
            {
                "job_name": name,
                "static_configs": [{"targets": [system.url(name).removeprefix("http://")]}],
            }
            for name in SERVICES
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    proc = spawn(
        [
            binary,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        log_path=work / "prometheus.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: ready(url), 30, "prometheus ready")
        # Two scrapes of every target and every rule evaluated at least once.
        wait_until(
            lambda: len(query(url, "up == 1 and count_over_time(up[1m]) >= 2")) == 4, 30, "scrapes"
        )
        wait_until(lambda: all(r["health"] != "unknown" for r in rule_states(url)), 30, "rules")
        yield url
    finally:
        stop_process(proc)
        assert proc.poll() is not None


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def api(url: str, path: str, **params: str) -> Any:
    reply = httpx.get(f"{url}/api/v1/{path}", params=params, timeout=10)
    body = reply.json()
    if body.get("status") != "success":
        raise QueryError(body.get("error", reply.text))
    return body["data"]


class QueryError(Exception):
    pass


def query(url: str, expr: str) -> list[dict[str, Any]]:
    data = api(url, "query", query=expr)
    result: list[dict[str, Any]] = data["result"]
    return result


def rule_states(url: str) -> list[dict[str, Any]]:
    return [r for g in api(url, "rules")["groups"] for r in g["rules"]]


def test_every_alert_and_dashboard_expression_evaluates(prometheus: str) -> None:
    failures = {}
    for where, expr in {**alert_queries(), **dashboard_queries()}.items():
        try:
            query(prometheus, expr)
        except QueryError as e:
            failures[where] = str(e)
    assert failures == {}


def test_prometheus_evaluates_every_rule_without_error(prometheus: str) -> None:
    states = rule_states(prometheus)
    assert len(states) == len(alert_queries())
    broken = {r["name"]: r.get("lastError") for r in states if r["health"] != "ok"}
    assert broken == {}


def test_the_healthy_system_looks_healthy(prometheus: str) -> None:
    # Every service answers, each engine has exactly one lease holder.
    up = {r["metric"]["job"]: r["value"][1] for r in query(prometheus, "up")}
    assert up == dict.fromkeys(SERVICES, "1")
    for engine in ("router", "sla"):
        [holders] = query(prometheus, f"sum(omniroute_{engine}_lease_holder)")
        assert holders["value"][1] == "1"

    # The dashboard's lease-holder joins find the holder's gauges.
    panels = dashboard_queries()
    depth = query(prometheus, panels["Queue depth by priority [A]"])
    assert sorted(r["metric"]["priority"] for r in depth) == ["P1", "P2", "P3", "P4"]
    presence = {
        r["metric"]["presence"]: float(r["value"][1])
        for r in query(prometheus, panels["Agents by presence [A]"])
    }
    assert presence["online"] >= 1

    # The chat message and the dead letter are counted where the dashboard looks.
    channels = query(
        prometheus, 'sum by (channel) (omniroute_ingest_messages_total{outcome="published"})'
    )
    assert "chat" in {r["metric"]["channel"] for r in channels}
    dead = query(
        prometheus, 'sum(faststream_published_messages_total{destination="support.deadletter"})'
    )
    assert float(dead[0]["value"][1]) >= 1

    # None of the availability alerts is pending or firing.
    alerts = api(prometheus, "alerts")["alerts"]
    noisy = {
        a["labels"]["alertname"]
        for a in alerts
        if a["labels"]["alertname"]
        in {"OmnirouteServiceDown", "OmnirouteServiceMissing", "OmnirouteEngineNoLeaseHolder"}
    }
    assert noisy == set()
