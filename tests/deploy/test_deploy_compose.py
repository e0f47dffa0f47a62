"""docker-compose.yml's Prometheus and Grafana, checked without Docker: Prometheus scrapes
the four services where compose runs them and loads the alerts Kubernetes gets; Grafana
gets that Prometheus as its data source and the dashboard. (The Compose schema and the
services themselves: tests/deploy/test_packaging.py.)"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("ingest", "router", "sla", "notify")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Bind mounts: container path -> repository file."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            found[target] = ROOT / source
    return found


def read_mounted(service: dict[str, Any], container_path: str) -> Any:
    return yaml.safe_load(mounts(service)[container_path].read_text(encoding="utf-8"))


def flag(command: list[str], name: str) -> str:
    [value] = [c.partition("=")[2] for c in command if c.startswith(f"--{name}=")]
    return value


def test_prometheus_scrapes_the_four_services_where_compose_runs_them(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    prometheus = services["prometheus"]
    config = read_mounted(prometheus, flag(prometheus["command"], "config.file"))
    jobs = {
        job["job_name"]: [t for c in job["static_configs"] for t in c["targets"]]
        for job in config["scrape_configs"]
    }
    for name in SERVICES:
        port = services[name]["environment"]["OMNIROUTE_HTTP_PORT"]
        # The job is named after the service, as the ServiceMonitors' jobLabel makes it.
        assert jobs[name] == [f"{name}:{port}"]


def test_prometheus_loads_the_rules_kubernetes_gets(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    config_path = PurePosixPath(flag(prometheus["command"], "config.file"))
    config = read_mounted(prometheus, str(config_path))
    for rule_file in config["rule_files"]:
        # Relative rule files are read from the config file's directory.
        mounted = mounts(prometheus)[str(config_path.parent / rule_file)]
        assert mounted == ROOT / "deploy" / "prometheus" / "rules.yml"
    assert config["rule_files"]


def test_prometheus_keeps_its_data_in_a_volume_and_checks_its_health(
    compose: dict[str, Any],
) -> None:
    prometheus = compose["services"]["prometheus"]
    storage = flag(prometheus["command"], "storage.tsdb.path")
    assert f"prometheus-data:{storage}" in prometheus["volumes"]
    assert prometheus["read_only"] is True
    assert "/-/ready" in " ".join(prometheus["healthcheck"]["test"])
    # It starts whatever state the services are in: it is what reports them down.
    assert "depends_on" not in prometheus


def test_grafana_shows_the_dashboard_from_that_prometheus(compose: dict[str, Any]) -> None:
    services = compose["services"]
    grafana = services["grafana"]
    assert grafana["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    assert "/api/health" in " ".join(grafana["healthcheck"]["test"])

    [source] = provisioned(grafana, "datasources")["datasources"]
    published = services["prometheus"]["ports"][0].rsplit(":", 1)[-1]
    assert source["type"] == "prometheus"
    assert source["url"] == f"http://prometheus:{published}"

    [provider] = provisioned(grafana, "dashboards")["providers"]
    folder = provider["options"]["path"]
    dashboards = {
        PurePosixPath(target).parent: path
        for target, path in mounts(grafana).items()
        if target.endswith(".json")
    }
    assert dashboards[PurePosixPath(folder)] == ROOT / "deploy" / "grafana" / "omniroute.json"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert mounts(grafana)[home] == ROOT / "deploy" / "grafana" / "omniroute.json"


def provisioned(grafana: dict[str, Any], kind: str) -> dict[str, Any]:
    """The one provisioning file of `kind` mounted into Grafana."""
    directory = mounts(grafana)[f"/etc/grafana/provisioning/{kind}"]
    [path] = sorted(directory.glob("*.yml"))
    loaded: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert loaded["apiVersion"] == 1
    return loaded


def test_monitoring_images_are_pinned(compose: dict[str, Any]) -> None:
    for name in ("prometheus", "grafana"):
        image = compose["services"][name]["image"]
        _, _, tag = image.rpartition(":")
        assert tag and tag != "latest", image
