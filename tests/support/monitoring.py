"""What the alerts (deploy/prometheus/rules.yml) and the Grafana dashboard query, as
PromQL, and the metric names those queries and a service's /metrics page name: the deploy
checks and the e2e observability test compare them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "omniroute.json"
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
