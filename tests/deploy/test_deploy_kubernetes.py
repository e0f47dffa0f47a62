"""Kubernetes manifests (deploy/base, deploy/overlays/*), checked offline: both overlays
build with `kubectl kustomize`, every resource validates against the Kubernetes JSON
schemas (kubernetes-validate, strict) or the operators' CRD schemas vendored in
deploy/schemas/, and then for what a schema cannot see: ports, probes, hardening,
settings, secrets, topics, network policies, scrape targets."""

from __future__ import annotations

import base64
import copy
import importlib.util
import json
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.settings import (
    IngestSettings,
    NotifySettings,
    RouterSettings,
    ServiceSettings,
    SlaSettings,
)
from shared.topics import (
    ALL_TOPICS,
    CUSTOMERS,
    DEADLETTER,
    INBOUND_BY_CHANNEL,
    PARTITIONS,
    TICKETS,
    TOPIC_CONFIGS,
)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("dev", "prod")
SETTINGS: dict[str, type[ServiceSettings]] = {
    "ingest": IngestSettings,
    "router": RouterSettings,
    "sla": SlaSettings,
    "notify": NotifySettings,
}
SERVICES = tuple(SETTINGS)
ENGINES = ("router", "sla")
WORKERS = ("ingest", "notify")
# Topics each worker's consumer group reads (DESIGN.md); partitions bound its replicas.
WORKER_INPUTS = {"ingest": tuple(INBOUND_BY_CHANNEL.values()), "notify": (TICKETS,)}
# Kubernetes versions the manifests must be valid for: the oldest we support, the newest
# kubernetes-validate knows.
K8S_VERSIONS = ("1.29.0", "latest")
CRD_SCHEMAS = {
    ("kafka.strimzi.io/v1", "KafkaTopic"): "kafkatopic-kafka-v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring-v1.json",
}
# Secrets the production overlay references and docs/deploy.md tells how to create.
PROD_SECRETS = {
    "omniroute-secrets": {"api-keys", "webhook-secrets"},
    # Each service's own MongoDB user and database (deploy/mongodb).
    **{f"omniroute-mongodb-{s}": {"connectionString.standard"} for s in SERVICES},
    "omniroute-smtp": {"username", "password"},
}


def load_render() -> Any:
    """deploy/prometheus/render_prometheusrule.py's render(); deploy/ is not a package."""
    path = DEPLOY / "prometheus" / "render_prometheusrule.py"
    spec = importlib.util.spec_from_file_location("render_prometheusrule", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.render


needs_kubectl = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl not installed: it builds the overlays"
)


# --- building ------------------------------------------------------------------------


@cache
def build(overlay: str) -> tuple[dict[str, Any], ...]:
    run = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, f"kubectl kustomize deploy/overlays/{overlay}:\n{run.stderr}"
    return tuple(d for d in yaml.safe_load_all(run.stdout) if d)


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed: it builds the overlays")
    return str(request.param)


@pytest.fixture(scope="module")
def docs(overlay: str) -> tuple[dict[str, Any], ...]:
    return build(overlay)


@pytest.fixture(scope="module")
def prod() -> tuple[dict[str, Any], ...]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed: it builds the overlays")
    return build("prod")


def base_name(doc: dict[str, Any]) -> str:
    """The name as written: generated ConfigMaps and Secrets get a content hash suffix."""
    name = str(doc["metadata"]["name"])
    if doc["kind"] in ("ConfigMap", "Secret") and "-" in name:
        stem, _, suffix = name.rpartition("-")
        if len(suffix) == 10 and suffix.isalnum():
            return stem
    return name


def find(docs: tuple[dict[str, Any], ...], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one resource of `kind` (named `name`)."""
    found = [d for d in docs if d["kind"] == kind and name in (None, base_name(d))]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def of_kind(docs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def config_map_data(docs: tuple[dict[str, Any], ...], name: str) -> dict[str, str]:
    return dict(find(docs, "ConfigMap", name).get("data", {}))


def secret_data(doc: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in doc.get("data", {}).items()}


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against labels."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def test_selector_matching() -> None:
    labels = {"app.kubernetes.io/name": "notify", "tier": "x"}
    assert selects({}, labels)
    assert selects({"matchLabels": {"tier": "x"}}, labels)
    assert not selects({"matchLabels": {"tier": "y"}}, labels)
    expr = {"key": "app.kubernetes.io/name", "operator": "In", "values": ["ingest", "notify"]}
    assert selects({"matchExpressions": [expr]}, labels)
    assert not selects({"matchExpressions": [{**expr, "values": ["sla"]}]}, labels)


# --- schemas -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kubernetes_validate() -> Any:
    return pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate (ships the Kubernetes JSON schemas) not installed",
    )


@cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (DEPLOY / "schemas" / CRD_SCHEMAS[(api_version, kind)]).read_text(encoding="utf-8")
    )
    return loaded


def schema_errors(doc: dict[str, Any], kubernetes_validate: Any, version: str) -> list[str]:
    """Why `doc` is invalid (empty if it is valid)."""
    import jsonschema

    key = (doc["apiVersion"], doc["kind"])
    if key in CRD_SCHEMAS:
        schema = crd_schema(*key)
        validator = jsonschema.Draft202012Validator(schema)
        return [
            f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(doc)
        ]
    if version == "latest":
        version = kubernetes_validate.latest_version()
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{'.'.join(map(str, e.path))}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [e.message]
    return []


def test_vendored_crd_schemas_are_valid_json_schemas() -> None:
    import jsonschema

    for key in CRD_SCHEMAS:
        jsonschema.Draft202012Validator.check_schema(crd_schema(*key))


@needs_kubectl
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_resource_validates_against_its_schema(
    docs: tuple[dict[str, Any], ...], kubernetes_validate: Any, version: str, overlay: str
) -> None:
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "KafkaTopic", "NetworkPolicy", "ServiceMonitor"} <= kinds
    errors = {
        f"{d['kind']}/{d['metadata']['name']}": errs
        for d in docs
        if (errs := schema_errors(d, kubernetes_validate, version))
    }
    assert errors == {}, f"{overlay} against Kubernetes {version}"


@needs_kubectl
def test_schemas_reject_a_misspelt_field(
    prod: tuple[dict[str, Any], ...], kubernetes_validate: Any
) -> None:
    # Strictness is what makes the validation above worth something.
    deployment = copy.deepcopy(find(prod, "Deployment", "router"))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"][
        "readOnlyRootFileSystem"
    ] = True
    assert schema_errors(deployment, kubernetes_validate, "latest")

    topic = copy.deepcopy(of_kind(prod, "KafkaTopic")[0])
    topic["spec"]["partition"] = 4
    assert schema_errors(topic, kubernetes_validate, "latest")

    monitor = copy.deepcopy(of_kind(prod, "ServiceMonitor")[0])
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    assert schema_errors(monitor, kubernetes_validate, "latest")

    rule = copy.deepcopy(find(prod, "PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["for"] = "two minutes"
    assert schema_errors(rule, kubernetes_validate, "latest")


# --- services ------------------------------------------------------------------------


def default_port(service: str) -> int:
    port = SETTINGS[service].model_fields["http_port"].default
    assert isinstance(port, int)
    return port


@needs_kubectl
@pytest.mark.parametrize("service", SETTINGS)
def test_service_has_account_deployment_service_and_budget(
    docs: tuple[dict[str, Any], ...], service: str
) -> None:
    account = find(docs, "ServiceAccount", service)
    assert account["automountServiceAccountToken"] is False
    deployment = find(docs, "Deployment", service)
    pod = deployment["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == service
    assert selects(deployment["spec"]["selector"], pod["metadata"]["labels"])
    assert pod["metadata"]["labels"]["app.kubernetes.io/part-of"] == "omniroute"

    c = container(deployment)
    assert c["args"] == [service]
    [port] = c["ports"]
    assert port == {"name": "http", "containerPort": default_port(service)}
    env = {e["name"]: e for e in c["env"]}
    assert env["OMNIROUTE_HTTP_PORT"]["value"] == str(default_port(service))

    svc = find(docs, "Service", service)
    assert selects({"matchLabels": svc["spec"]["selector"]}, pod["metadata"]["labels"])
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": default_port(service), "targetPort": "http"}
    ]

    budget = find(docs, "PodDisruptionBudget", service)
    assert selects(budget["spec"]["selector"], pod["metadata"]["labels"])


@needs_kubectl
@pytest.mark.parametrize("service", SETTINGS)
def test_probes_check_health_and_readiness_on_the_service_port(
    docs: tuple[dict[str, Any], ...], service: str
) -> None:
    c = container(find(docs, "Deployment", service))
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # /readyz runs its checks with a 2 s timeout each (shared/service.py).
    assert c["readinessProbe"]["timeoutSeconds"] > 2


def quantity(value: str | int) -> float:
    """CPU or memory quantity as a number (cores, bytes)."""
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text.removesuffix(suffix)) * factor
    return float(text)


@needs_kubectl
def test_the_router_gets_whole_cpus_of_its_own(docs: tuple[dict[str, Any], ...]) -> None:
    # Guaranteed QoS with an integer CPU count: the static CPU manager gives the engine
    # exclusive cores, so the P1 path never queues for a CPU behind another service.
    pod = find(docs, "Deployment", "router")["spec"]["template"]["spec"]
    for c in pod["containers"] + pod.get("initContainers", []):
        resources = c["resources"]
        for what in ("cpu", "memory"):
            assert quantity(resources["requests"][what]) == quantity(resources["limits"][what])
        assert quantity(resources["requests"]["cpu"]).is_integer(), resources


@needs_kubectl
@pytest.mark.parametrize("service", SETTINGS)
def test_requests_and_limits(docs: tuple[dict[str, Any], ...], service: str) -> None:
    resources = container(find(docs, "Deployment", service))["resources"]
    for what in ("cpu", "memory"):
        assert 0 < quantity(resources["requests"][what]) <= quantity(resources["limits"][what])


@needs_kubectl
@pytest.mark.parametrize("service", SETTINGS)
def test_pods_run_hardened(docs: tuple[dict[str, Any], ...], service: str) -> None:
    # The "restricted" Pod Security Standard, plus a read-only root filesystem.
    pod = find(docs, "Deployment", service)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in pod
    c = container(find(docs, "Deployment", service))
    security = c["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["privileged"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    # The only writable place is an emptyDir on /tmp.
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert all(m.get("readOnly") for path, m in mounts.items() if path != "/tmp")


@needs_kubectl
def test_namespace_enforces_the_restricted_pod_security_standard(
    docs: tuple[dict[str, Any], ...],
) -> None:
    [namespace] = of_kind(docs, "Namespace")
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert all(
        d["metadata"].get("namespace") == namespace["metadata"]["name"]
        for d in docs
        if d["kind"] != "Namespace"
    )


def env_names(docs: tuple[dict[str, Any], ...], deployment: dict[str, Any]) -> dict[str, str]:
    """Every environment variable the container gets -> where from."""
    c = container(deployment)
    names = {e["name"]: "env" for e in c.get("env", [])}
    for source in c.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        doc = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == ref)
        names.update(dict.fromkeys(doc.get("data", {}), ref))
    return names


@needs_kubectl
@pytest.mark.parametrize("service", SETTINGS)
def test_environment_variables_are_settings_of_the_service(
    docs: tuple[dict[str, Any], ...], service: str
) -> None:
    names = env_names(docs, find(docs, "Deployment", service))
    fields = SETTINGS[service].model_fields
    unknown = [n for n in names if n.removeprefix("OMNIROUTE_").lower() not in fields]
    assert unknown == [], f"{service}: not settings: {unknown}"
    # What production refuses to start without, and where the stack is.
    for wanted in (
        "OMNIROUTE_WEBHOOK_SECRETS",
        "OMNIROUTE_MONGO_URI",
        "OMNIROUTE_KAFKA_BOOTSTRAP",
        "OMNIROUTE_ENVIRONMENT",
    ):
        assert wanted in names, f"{service}: {wanted} missing"
    # The services with an API get their named keys; the development key is never given
    # (production refuses to start with it).
    assert ("OMNIROUTE_API_KEYS" in names) == (service != "sla"), service
    assert "OMNIROUTE_API_TOKEN" not in names, service


@needs_kubectl
def test_settings_suit_a_real_cluster(docs: tuple[dict[str, Any], ...], overlay: str) -> None:
    config = config_map_data(docs, "omniroute-config")
    expected_environment = {"dev": "development", "prod": "production"}[overlay]
    assert config["OMNIROUTE_ENVIRONMENT"] == expected_environment
    # Strimzi owns the topics (KafkaTopic resources), with replication the services'
    # start-up creation would not give them.
    assert config["OMNIROUTE_KAFKA_CREATE_TOPICS"] == "false"
    assert config["OMNIROUTE_KAFKA_IDEMPOTENT_PRODUCER"] == "true"
    assert config["OMNIROUTE_HTTP_HOST"] == "0.0.0.0"
    for service in SETTINGS:
        c = container(find(docs, "Deployment", service))
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert config["OMNIROUTE_POLICY_DIR"] in mounts


@needs_kubectl
def test_all_four_run_one_pinned_image(prod: tuple[dict[str, Any], ...]) -> None:
    images = {container(find(prod, "Deployment", s))["image"] for s in SETTINGS}
    assert len(images) == 1
    [image] = images
    name, _, tag = image.rpartition(":")
    assert name and tag and tag != "latest"


# --- engines and workers ---------------------------------------------------------------


@needs_kubectl
@pytest.mark.parametrize("engine", ENGINES)
def test_engines_run_two_replicas_with_the_lease_and_no_autoscaler(
    docs: tuple[dict[str, Any], ...], engine: str
) -> None:
    deployment = find(docs, "Deployment", engine)
    # One lease holder and one hot standby; more would only wait.
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert not [
        h for h in of_kind(docs, "HorizontalPodAutoscaler") if h["metadata"]["name"] == engine
    ]
    assert find(docs, "PodDisruptionBudget", engine)["spec"]["minAvailable"] == 1
    assert "lease_ttl_s" in SETTINGS[engine].model_fields


@needs_kubectl
@pytest.mark.parametrize("worker", WORKERS)
def test_workers_scale_with_an_autoscaler_up_to_their_partitions(
    docs: tuple[dict[str, Any], ...], worker: str
) -> None:
    deployment = find(docs, "Deployment", worker)
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
    hpa = find(docs, "HorizontalPodAutoscaler", worker)
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": worker,
    }
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # A consumer beyond the group's partition count gets no partition.
    partitions = sum(PARTITIONS[t] for t in WORKER_INPUTS[worker])
    assert hpa["spec"]["maxReplicas"] <= partitions
    # Any container with a CPU target needs a CPU request to scale on.
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert "cpu" in container(deployment)["resources"]["requests"]


# --- policy, secrets ---------------------------------------------------------------------


def test_policy_copies_match_policy_directory() -> None:
    # Kustomize reads files only below deploy/base: policy/ is copied there.
    source = {p.name: p.read_bytes() for p in (ROOT / "policy").glob("*.yaml")}
    copied = {p.name: p.read_bytes() for p in (DEPLOY / "base" / "policy").glob("*.yaml")}
    assert sorted(copied) == sorted(source), "deploy/base/policy/ lists other files"
    stale = sorted(name for name in source if copied[name] != source[name])
    assert not stale, f"run: cp policy/*.yaml deploy/base/policy/  (stale: {stale})"


@needs_kubectl
def test_policy_config_map_carries_every_policy_file(docs: tuple[dict[str, Any], ...]) -> None:
    data = config_map_data(docs, "omniroute-policy")
    copies = DEPLOY / "base" / "policy"
    assert sorted(data) == sorted(p.name for p in (ROOT / "policy").glob("*.yaml"))
    for name, text in data.items():
        assert text == (copies / name).read_text(encoding="utf-8")


def secret_refs(docs: tuple[dict[str, Any], ...]) -> Iterator[tuple[str, dict[str, Any]]]:
    for deployment in of_kind(docs, "Deployment"):
        for e in container(deployment).get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                yield deployment["metadata"]["name"], ref


@needs_kubectl
def test_production_generates_no_secret_and_references_the_documented_ones(
    prod: tuple[dict[str, Any], ...],
) -> None:
    assert of_kind(prod, "Secret") == [], "production secrets are created out of band"
    guide = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    referenced: dict[str, set[str]] = {}
    for _, ref in secret_refs(prod):
        referenced.setdefault(ref["name"], set()).add(ref["key"])
    assert referenced == PROD_SECRETS
    for name, keys in PROD_SECRETS.items():
        assert name in guide, f"docs/deploy.md does not say how to create {name}"
        for key in keys:
            assert key in guide, f"docs/deploy.md does not name the key {name}/{key}"


@needs_kubectl
def test_development_secrets_resolve_and_are_the_known_placeholders() -> None:
    dev = build("dev")
    secrets = {d["metadata"]["name"]: secret_data(d) for d in of_kind(dev, "Secret")}
    for service, ref in secret_refs(dev):
        if ref.get("optional") or ref["name"].startswith("omniroute-mongodb-"):
            continue  # written by the MongoDB operator, or optional
        assert ref["key"] in secrets.get(ref["name"], {}), f"{service}: {ref} unresolved"
    [generated] = [v for k, v in secrets.items() if k.startswith("omniroute-secrets-")]
    webhook = json.loads(generated["webhook-secrets"])
    providers = set(
        ServiceSettings.model_fields["webhook_secrets"].get_default(call_default_factory=True)
    )
    assert set(webhook) == providers


def build_mongodb() -> tuple[dict[str, Any], ...]:
    run = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / "mongodb")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, f"kubectl kustomize deploy/mongodb:\n{run.stderr}"
    return tuple(d for d in yaml.safe_load_all(run.stdout) if d)


@needs_kubectl
@pytest.mark.parametrize("service", SERVICES)
def test_each_service_has_its_own_database_and_user(
    docs: tuple[dict[str, Any], ...], service: str
) -> None:
    env = {e["name"]: e for e in container(find(docs, "Deployment", service)).get("env", [])}
    database = env["OMNIROUTE_MONGO_DB"]["value"]
    assert database == f"omniroute_{service}" == SETTINGS[service]().mongo_db
    secret = env["OMNIROUTE_MONGO_URI"]["valueFrom"]["secretKeyRef"]
    assert secret == {"name": f"omniroute-mongodb-{service}", "key": "connectionString.standard"}
    # The one MongoDB deployment: the operator writes that Secret for this service's user,
    # whose only role is readWrite on this service's database.
    [mongodb] = of_kind(build_mongodb(), "MongoDBCommunity")
    users = {u["connectionStringSecretName"]: u for u in mongodb["spec"]["users"]}
    assert len(users) == len(mongodb["spec"]["users"]) == len(SERVICES)
    user = users[secret["name"]]
    assert user["name"] == f"omniroute-{service}"
    assert user["roles"] == [{"name": "readWrite", "db": database}]
    assert user["passwordSecretRef"]["name"] == f"omniroute-mongodb-{service}-password"
    # No shared database name left in the common settings.
    assert "OMNIROUTE_MONGO_DB" not in config_map_data(docs, "omniroute-config")


# --- Kafka topics ---------------------------------------------------------------------------


@needs_kubectl
def test_a_kafka_topic_per_contract_topic_with_its_partitions(
    docs: tuple[dict[str, Any], ...], overlay: str
) -> None:
    topics = {t["spec"]["topicName"]: t for t in of_kind(docs, "KafkaTopic")}
    assert sorted(topics) == sorted(ALL_TOPICS)
    replicas = {"dev": 1, "prod": 3}[overlay]
    for name, topic in topics.items():
        spec = topic["spec"]
        assert spec["partitions"] == PARTITIONS[name], name
        assert spec["replicas"] == replicas, name
        # acks=all waits for min.insync.replicas: one broker can be down.
        assert spec["config"]["min.insync.replicas"] == max(1, replicas - 1), name
        if name == CUSTOMERS:  # the latest record per customer, kept until a tombstone
            assert spec["config"]["cleanup.policy"] == "compact"
            assert "retention.ms" not in spec["config"]
        else:
            assert spec["config"]["retention.ms"] > 0, name


@needs_kubectl
def test_topic_retention_is_what_the_services_create_topics_with(
    docs: tuple[dict[str, Any], ...],
) -> None:
    # Strimzi's topics and the topics the services create (the embedded stack, Compose)
    # keep records equally long: shared/topics.TOPIC_CONFIGS is the one table.
    for topic in of_kind(docs, "KafkaTopic"):
        name, config = topic["spec"]["topicName"], topic["spec"]["config"]
        for key, value in TOPIC_CONFIGS[name].items():
            assert str(config[key]) == value, (name, key)


@needs_kubectl
def test_dead_letters_are_kept_longest(prod: tuple[dict[str, Any], ...]) -> None:
    retention = {
        t["spec"]["topicName"]: t["spec"]["config"]["retention.ms"]
        for t in of_kind(prod, "KafkaTopic")
        if t["spec"]["topicName"] != CUSTOMERS  # compacted: no time-based retention
    }
    kept = retention.pop(DEADLETTER)
    assert kept > max(retention.values())


@needs_kubectl
def test_topics_belong_to_the_cluster_the_services_bootstrap_from(
    docs: tuple[dict[str, Any], ...],
) -> None:
    clusters = {t["metadata"]["labels"]["strimzi.io/cluster"] for t in of_kind(docs, "KafkaTopic")}
    [cluster] = clusters
    bootstrap = config_map_data(docs, "omniroute-config")["OMNIROUTE_KAFKA_BOOTSTRAP"]
    # Strimzi names the bootstrap Service <cluster>-kafka-bootstrap.
    assert bootstrap.startswith(f"{cluster}-kafka-bootstrap."), bootstrap


# --- network policies -------------------------------------------------------------------------


def pod_labels(docs: tuple[dict[str, Any], ...], service: str) -> dict[str, str]:
    labels = find(docs, "Deployment", service)["spec"]["template"]["metadata"]["labels"]
    return dict(labels)


def policies_for(docs: tuple[dict[str, Any], ...], service: str) -> list[dict[str, Any]]:
    labels = pod_labels(docs, service)
    return [p for p in of_kind(docs, "NetworkPolicy") if selects(p["spec"]["podSelector"], labels)]


def rules(policies: list[dict[str, Any]], direction: str) -> list[dict[str, Any]]:
    return [r for p in policies for r in p["spec"].get(direction, [])]


def allows_port(rule: dict[str, Any], port: int | str, protocol: str = "TCP") -> bool:
    return (
        any(
            p.get("port") == port and p.get("protocol", "TCP") == protocol
            for p in rule.get("ports", [])
        )
        or "ports" not in rule
    )


def peers_in_namespace(rule: dict[str, Any], namespace: str) -> bool:
    key = "kubernetes.io/metadata.name"
    return any(
        peer.get("namespaceSelector", {}).get("matchLabels", {}).get(key) == namespace
        for peer in rule.get("to", rule.get("from", []))
    )


@needs_kubectl
def test_default_deny_covers_every_pod(docs: tuple[dict[str, Any], ...]) -> None:
    deny = find(docs, "NetworkPolicy", "default-deny")
    assert deny["spec"]["podSelector"] == {}
    assert sorted(deny["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    assert "ingress" not in deny["spec"]
    assert "egress" not in deny["spec"]


@needs_kubectl
@pytest.mark.parametrize("service", SETTINGS)
def test_each_service_reaches_dns_kafka_and_mongodb(
    docs: tuple[dict[str, Any], ...], service: str
) -> None:
    egress = rules(policies_for(docs, service), "egress")
    dns = [r for r in egress if peers_in_namespace(r, "kube-system")]
    assert any(allows_port(r, 53, "UDP") for r in dns)
    assert any(allows_port(r, 53, "TCP") for r in dns)
    bootstrap = config_map_data(docs, "omniroute-config")["OMNIROUTE_KAFKA_BOOTSTRAP"]
    host, _, port = bootstrap.rpartition(":")
    kafka_namespace = host.split(".")[1]
    assert any(peers_in_namespace(r, kafka_namespace) and allows_port(r, int(port)) for r in egress)
    assert any(peers_in_namespace(r, "mongodb") and allows_port(r, 27017) for r in egress)


@needs_kubectl
@pytest.mark.parametrize("service", SETTINGS)
def test_prometheus_may_scrape_each_service(docs: tuple[dict[str, Any], ...], service: str) -> None:
    ingress = rules(policies_for(docs, service), "ingress")
    assert any(peers_in_namespace(r, "monitoring") and allows_port(r, "http") for r in ingress)


@needs_kubectl
def test_only_the_apis_take_outside_callers_and_only_notify_sends_mail(
    docs: tuple[dict[str, Any], ...],
) -> None:
    def api_callers(service: str) -> bool:
        return any(
            "omniroute.io/access" in peer.get("namespaceSelector", {}).get("matchLabels", {})
            for r in rules(policies_for(docs, service), "ingress")
            for peer in r.get("from", [])
        )

    def smtp(service: str) -> bool:
        return any(
            allows_port(r, 587) and not peers_in_namespace(r, "kube-system")
            for r in rules(policies_for(docs, service), "egress")
            if "to" not in r
        )

    assert {s for s in SETTINGS if api_callers(s)} == {"ingest", "router", "notify"}
    assert {s for s in SETTINGS if smtp(s)} == {"notify"}


# --- monitoring --------------------------------------------------------------------------------


@needs_kubectl
@pytest.mark.parametrize("service", SETTINGS)
def test_a_service_monitor_scrapes_each_service_as_its_job(
    docs: tuple[dict[str, Any], ...], service: str
) -> None:
    svc = find(docs, "Service", service)
    [monitor] = [
        m
        for m in of_kind(docs, "ServiceMonitor")
        if selects(m["spec"]["selector"], svc["metadata"]["labels"])
    ]
    # rules.yml and the dashboard name jobs after the services.
    assert svc["metadata"]["labels"][monitor["spec"]["jobLabel"]] == service
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


@needs_kubectl
def test_prometheus_rule_carries_rules_yml(docs: tuple[dict[str, Any], ...]) -> None:
    rules_yml = DEPLOY / "prometheus" / "rules.yml"
    rendered = load_render()(rules_yml.read_text(encoding="utf-8"))
    assert rendered == (DEPLOY / "prometheus" / "prometheusrule.yaml").read_text(
        encoding="utf-8"
    ), "run: python deploy/prometheus/render_prometheusrule.py"
    rule = find(docs, "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(rules_yml.read_text(encoding="utf-8"))["groups"]


@needs_kubectl
def test_dashboard_config_map_is_the_dashboard(docs: tuple[dict[str, Any], ...]) -> None:
    [board] = [
        c
        for c in of_kind(docs, "ConfigMap")
        if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    ]
    assert board["data"] == {
        "omniroute.json": (DEPLOY / "grafana" / "omniroute.json").read_text(encoding="utf-8")
    }
