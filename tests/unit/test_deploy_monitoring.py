"""Alerts and dashboard, checked offline: `promtool check rules`, `promtool test rules`
with a firing case for every alert rule, conventions every alert keeps (severity,
summary, runbook section in docs/deploy.md), and the Grafana dashboard's structure.

Also the PromQL helpers the e2e observability test uses to compare the metric names
the alerts and the dashboard reference with what the services export.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "rules.yml"
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
DASHBOARD = ROOT / "deploy" / "grafana" / "omniroute.json"
GUIDE = ROOT / "docs" / "deploy.md"
SEVERITIES = {"critical", "warning"}
# Grafana's built-in variables, replaced by a value when an expression is evaluated.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}
# Series Prometheus makes itself, not the services.
PROMETHEUS_SERIES = {
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
    "ALERTS",
    "ALERTS_FOR_STATE",
}

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (Debian package prometheus; `make test` installs it as root)",
)


# --- what the alerts and the dashboard query -------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def dashboard_panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows hold theirs
    return panels


def dashboard_queries() -> dict[str, str]:
    """'panel title [refId]' -> PromQL, with Grafana's variables given values."""
    queries = {}
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries[f"{panel['title']} [{target['refId']}]"] = expr
    return queries


def alert_queries() -> dict[str, str]:
    """'alert name (labels)' -> PromQL."""
    return {
        f"{r['alert']} {r.get('labels', {})}": str(r["expr"]) for r in alert_rules() if "alert" in r
    }


KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word, before = match.group(), text[: match.start()]
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function
        if word.lower() in KEYWORDS or (before and (before[-1].isdigit() or before[-1] == ".")):
            continue  # a keyword, or the unit of a duration or a number (10m, 1e3)
        names.add(word)
    return names


def exported_names(exposition: str) -> set[str]:
    """Metric names a /metrics page declares (# TYPE) or has samples of; a histogram
    also answers to its _bucket, _sum and _count series, a summary to _sum and _count."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            elif kind == "summary":
                names |= {f"{name}_sum", f"{name}_count"}
            elif kind == "counter" and not name.endswith("_total"):
                names.add(f"{name}_total")
        elif line and not line.startswith("#"):
            match = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
            if match:
                names.add(match.group())
    return names


def missing_names(queries: dict[str, str], exported: set[str]) -> dict[str, list[str]]:
    """metric name -> the queries that reference it, for names nobody exports."""
    missing: dict[str, list[str]] = {}
    for where, expr in queries.items():
        for name in sorted(metric_names(expr) - exported - PROMETHEUS_SERIES):
            missing.setdefault(name, []).append(where)
    return missing


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
