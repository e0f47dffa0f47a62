"""Alerts and dashboard, checked offline: `promtool check rules`, `promtool test rules`
with a firing case for every alert rule, conventions every alert keeps (severity,
summary, runbook section in docs/deploy.md), and the Grafana dashboard's structure.

Also the PromQL helpers in tests/support/monitoring.py, with which the e2e observability
test compares the metric names the alerts and the dashboard reference with what the
services export.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.support.monitoring import (
    PROMETHEUS_DIR,
    ROOT,
    RULES,
    alert_queries,
    alert_rules,
    dashboard,
    dashboard_panels,
    dashboard_queries,
    exported_names,
    metric_names,
    missing_names,
)

RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
GUIDE = ROOT / "docs" / "deploy.md"
SEVERITIES = {"critical", "warning"}

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (Debian package prometheus; `make test` installs it as root)",
)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('up{job=~"a|b"} == 0', {"up"}),
        (
            "histogram_quantile(0.95, sum by (le, priority) (rate(x_seconds_bucket[5m])))",
            {"x_seconds_bucket"},
        ),
        (
            "max by (priority) (q and on (instance) (holder == 1)) > 5 or vector(0)",
            {"q", "holder"},
        ),
        (
            'sum(rate(a_total{d="x.y"}[10m])) - (sum(b_total offset 10m) or vector(0))',
            {"a_total", "b_total"},
        ),
        ("absent(up{job=\"sla\"}) or label_replace(c, 'dst', '$1', 'src', '(.*)')", {"up", "c"}),
        ("sum without (instance) (m) * 1e3 / ignoring(le) group_left(x) n", {"m", "n"}),
        ("max_over_time(g[5m:1m]) > bool 2", {"g"}),
    ],
)
def test_metric_names_finds_selectors_only(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_exported_names_reads_types_and_samples() -> None:
    page = (
        "# HELP h_seconds x\n# TYPE h_seconds histogram\n"
        "# TYPE c counter\nc_total 1\n"
        "# TYPE g gauge\n"
        'q_total{a="b"} 2\n'
    )
    assert exported_names(page) == {
        "h_seconds",
        "h_seconds_bucket",
        "h_seconds_sum",
        "h_seconds_count",
        "c",
        "c_total",
        "g",
        "q_total",
    }
    assert missing_names({"p": "rate(h_seconds_bucket[1m]) + nope + up"}, exported_names(page)) == {
        "nope": ["p"]
    }


def test_queries_are_found() -> None:
    assert len(alert_queries()) == len(alert_rules())
    assert len(dashboard_queries()) >= 30
    assert not [q for q in dashboard_queries().values() if "$" in q], "unknown Grafana variable"


# --- promtool ------------------------------------------------------------------------------


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, timeout=120, check=False
    )


@needs_promtool
def test_promtool_checks_the_rules_and_the_compose_config() -> None:
    rules = promtool("check", "rules", str(RULES))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = promtool("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    assert RULE_TESTS
    run = promtool("test", "rules", *map(str, RULE_TESTS))
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_alert_rule_has_a_unit_test_where_it_fires() -> None:
    # An alert name can have several rules (per engine, per consumer group): each rule
    # is told apart by its labels and needs a case where exactly it fires.
    fired: list[dict[str, str]] = []
    for path in RULE_TESTS:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert spec["rule_files"] == ["../rules.yml"], path.name
        for case in spec["tests"]:
            for check in case.get("alert_rule_test", []):
                for alert in check.get("exp_alerts", []):
                    fired.append({"alertname": check["alertname"], **alert["exp_labels"]})
    untested = [
        f"{rule['alert']} {rule.get('labels', {})}"
        for rule in alert_rules()
        if not any(
            {"alertname": rule["alert"], **rule.get("labels", {})}.items() <= f.items()
            for f in fired
        )
    ]
    assert untested == []


def test_alerts_say_how_bad_what_and_where_to_look() -> None:
    guide = GUIDE.read_text(encoding="utf-8")
    # GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes.
    anchors = {
        re.sub(r"[^a-z0-9 _-]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in guide.splitlines()
        if line.startswith("#")
    }
    for rule in alert_rules():
        name = rule["alert"]
        assert re.fullmatch(r"Omniroute[A-Z][A-Za-z0-9]+", name), name
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook"} <= set(annotations), name
        assert annotations["runbook"] == f"docs/deploy.md#{name.lower()}", name
        assert name.lower() in anchors, f"docs/deploy.md has no section {name}"


# --- dashboard --------------------------------------------------------------------------------


def test_dashboard_is_importable_and_uses_a_datasource_variable() -> None:
    board = dashboard()
    assert board["uid"] == "omniroute"
    assert board["title"]
    [variable] = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    ids = [p["id"] for p in dashboard_panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard_panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": f"${{{variable['name']}}}"}
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_dashboard_panels_fit_the_grid_without_overlapping() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dashboard_panels():
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_dashboard_shows_what_support_operations_watch() -> None:
    queries = " ".join(dashboard_queries().values())
    for metric in (
        "omniroute_router_queue_depth",  # queues by priority
        "omniroute_router_oldest_waiting_seconds",  # oldest wait by priority
        "omniroute_router_time_to_offer_seconds_bucket",  # time to offer
        "omniroute_router_ticket_events_total",  # SLA attainment: breaches per ticket opened
        "omniroute_sla_breaches_total",  # breaches
        "omniroute_ingest_messages_total",  # throughput by channel
        "omniroute_router_agents",  # agents by presence
        "omniroute_notify_notifications_total",  # notifications
        "omniroute_notify_incidents_open",  # incidents
        "omniroute_ingest_deadletters_total",  # dead letters
        "omniroute_notify_outbox_depth",
    ):
        assert metric in queries, metric
