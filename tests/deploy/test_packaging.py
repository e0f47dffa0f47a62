"""Container packaging, checked without Docker: the Dockerfile, .dockerignore and
docker-compose.yml (against the Compose Specification schema, then for the
mistakes a schema cannot see)."""

from __future__ import annotations

import copy
import json
import re
import shlex
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from shared.settings import (
    IngestSettings,
    NotifySettings,
    RouterSettings,
    ServiceSettings,
    SlaSettings,
)

ROOT = Path(__file__).resolve().parents[2]
# service -> HTTP port (DESIGN.md)
PORTS = {"ingest": 8081, "router": 8082, "sla": 8083, "notify": 8084}
SOURCE_DIRS = ("shared", "services")


# --- Dockerfile, parsed line by line -------------------------------------------


@dataclass(frozen=True)
class Instruction:
    line: int  # 1-based, where the instruction starts
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order, with backslash continuations joined and comments dropped."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continuation are ignored by Docker too
        if not pending:
            start = number
        continued = line.endswith("\\")
        pending.append(line.removesuffix("\\").strip())
        if not continued:
            keyword, _, args = " ".join(p for p in pending if p).partition(" ")
            instructions.append(Instruction(start, keyword.upper(), args.strip()))
            pending = []
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """Instructions grouped per build stage, each group starting with its FROM."""
    groups: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            groups.append([])
        if groups:
            groups[-1].append(ins)
    return groups


def flags_and_words(args: str) -> tuple[list[str], list[str]]:
    words = shlex.split(args)
    return [w for w in words if w.startswith("--")], [w for w in words if not w.startswith("--")]


def env_pairs(instructions: list[Instruction]) -> dict[str, str]:
    """ENV KEY=VALUE ... pairs (the only ENV form the Dockerfile uses)."""
    pairs: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "ENV":
            for word in shlex.split(ins.args):
                key, sep, value = word.partition("=")
                assert sep, f"line {ins.line}: use ENV KEY=VALUE, got {word!r}"
                pairs[key] = value
    return pairs


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def final_stage(dockerfile: list[Instruction]) -> list[Instruction]:
    return stages(dockerfile)[-1]


def test_parser_joins_continuations_and_skips_comments() -> None:
    text = "# c\nFROM a AS b\nRUN x \\\n    # inner\n    && y\nUSER 1\n"
    assert parse_dockerfile(text) == [
        Instruction(2, "FROM", "a AS b"),
        Instruction(3, "RUN", "x && y"),
        Instruction(6, "USER", "1"),
    ]


def test_dockerfile_is_multi_stage_on_one_python_base(dockerfile: list[Instruction]) -> None:
    # The virtualenv is copied between stages: every stage must run the same Python.
    args = {}
    for ins in dockerfile:
        if ins.keyword == "FROM":
            break
        if ins.keyword == "ARG":
            name, _, default = ins.args.partition("=")
            args[name] = default
    bases = []
    for ins in dockerfile:
        if ins.keyword == "FROM":
            _, words = flags_and_words(ins.args)
            bases.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0]))
    assert len(bases) >= 2
    assert len(set(bases)) == 1, bases
    assert bases[0].startswith("python:3.11-slim")


def test_dependencies_install_before_the_source_is_copied(
    dockerfile: list[Instruction],
) -> None:
    def first(pred: Any, what: str) -> int:
        lines = [ins.line for ins in dockerfile if pred(ins)]
        assert lines, f"no {what} in the Dockerfile"
        return min(lines)

    def copies(name: str) -> Any:
        return lambda ins: ins.keyword == "COPY" and name in flags_and_words(ins.args)[1][:-1]

    def pip_install(ins: Instruction) -> bool:
        return ins.keyword == "RUN" and "pip install" in ins.args

    pyproject = first(copies("pyproject.toml"), "COPY pyproject.toml")
    deps = first(lambda i: pip_install(i) and "--no-deps" not in i.args, "dependency install")
    package = first(lambda i: pip_install(i) and "--no-deps" in i.args, "pip install --no-deps")
    for source in SOURCE_DIRS:
        copied = first(copies(source), f"COPY {source}")
        assert pyproject < deps < copied < package, (source, pyproject, deps, copied, package)


def test_final_stage_runs_as_a_non_root_numeric_user(final_stage: list[Instruction]) -> None:
    users = [ins.args for ins in final_stage if ins.keyword == "USER"]
    assert users, "the last stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), "numeric UID, so Kubernetes runAsNonRoot can verify it"
    assert int(uid) != 0
    assert not gid or (gid.isdigit() and int(gid) != 0)


def test_final_stage_has_no_build_tools(final_stage: list[Instruction]) -> None:
    runs = " ".join(ins.args for ins in final_stage if ins.keyword == "RUN")
    for tool in ("apt-get install", "apk add", "gcc", "build-essential", "pip install"):
        assert tool not in runs
    copied_from = {
        flag.partition("=")[2]
        for ins in final_stage
        if ins.keyword == "COPY"
        for flag in flags_and_words(ins.args)[0]
        if flag.startswith("--from=")
    }
    assert "builder" in copied_from


def test_final_stage_entrypoint_ports_and_environment(final_stage: list[Instruction]) -> None:
    by_keyword = {ins.keyword: ins.args for ins in final_stage}
    assert json.loads(by_keyword["ENTRYPOINT"]) == ["omniroute"]
    assert json.loads(by_keyword["CMD"])[0] in PORTS
    exposed = {int(p.partition("/")[0]) for p in by_keyword["EXPOSE"].split()}
    assert set(PORTS.values()) <= exposed

    env = env_pairs(final_stage)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    # Published ports reach nothing if the server binds the loopback interface.
    assert env["OMNIROUTE_HTTP_HOST"] == "0.0.0.0"
    # A non-editable install has no ./policy beside the code: the image points to its copy.
    destinations = [
        flags_and_words(ins.args)[1][-1] for ins in final_stage if ins.keyword == "COPY"
    ]
    assert env["OMNIROUTE_POLICY_DIR"] in destinations


def test_dockerfile_env_names_are_settings(final_stage: list[Instruction]) -> None:
    unknown = [
        name
        for name in env_pairs(final_stage)
        if name.startswith("OMNIROUTE_") and not is_setting(name)
    ]
    assert not unknown


# --- .dockerignore ------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerignore() -> set[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return {line.strip().rstrip("/") for line in lines if line.strip() and line[0] != "#"}


def test_dockerignore_keeps_environments_and_caches_out(dockerignore: set[str]) -> None:
    wanted = {".git", ".venv", "**/__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
    assert wanted <= dockerignore, wanted - dockerignore


def test_dockerignore_keeps_what_the_build_copies(
    dockerfile: list[Instruction], dockerignore: set[str]
) -> None:
    for ins in dockerfile:
        if ins.keyword != "COPY" or any(
            f.startswith("--from") for f in flags_and_words(ins.args)[0]
        ):
            continue
        for source in flags_and_words(ins.args)[1][:-1]:
            top = source.split("/")[0]
            assert top not in dockerignore, f"line {ins.line}: {source} is in .dockerignore"
            assert (ROOT / source).exists(), f"line {ins.line}: {source} is not in the repo"


# --- docker-compose.yml -----------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    # PyYAML resolves the `<<` merge keys the file uses, as Compose does.
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    # check-jsonschema vendors the official compose-spec.json: no network needed.
    pytest.importorskip(
        "check_jsonschema", reason="check-jsonschema (vendors the Compose schema) not installed"
    )
    text = (
        resources.files("check_jsonschema.builtin_schemas.vendor")
        .joinpath("compose-spec.json")
        .read_text(encoding="utf-8")
    )
    schema: dict[str, Any] = json.loads(text)
    assert schema["title"] == "Compose Specification"
    return schema


def schema_errors(schema: dict[str, Any], document: dict[str, Any]) -> list[str]:
    import jsonschema

    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = validator_class(schema).iter_errors(document)
    return sorted(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_compose_file_follows_the_compose_specification(
    compose_schema: dict[str, Any], compose: dict[str, Any]
) -> None:
    assert schema_errors(compose_schema, compose) == []
    assert "version" not in compose, "the Compose Specification has no top-level version"


def test_compose_schema_rejects_a_misspelt_key(
    compose_schema: dict[str, Any], compose: dict[str, Any]
) -> None:
    # The check above is only worth something if the schema is strict.
    broken = copy.deepcopy(compose)
    broken["services"]["router"]["healthcheck"]["intervall"] = "5s"
    assert schema_errors(compose_schema, broken)


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """depends_on as {service: condition}, from either of its two forms."""
    value = service.get("depends_on", {})
    if isinstance(value, list):
        return dict.fromkeys(value, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in value.items()}


def environment(service: dict[str, Any]) -> dict[str, str]:
    value = service.get("environment", {})
    if isinstance(value, list):
        return dict(item.partition("=")[::2] for item in value)
    return {k: str(v) for k, v in value.items()}


def is_setting(env_name: str) -> bool:
    name = env_name.removeprefix("OMNIROUTE_").lower()
    return any(
        name in settings.model_fields
        for settings in (
            ServiceSettings,
            IngestSettings,
            RouterSettings,
            SlaSettings,
            NotifySettings,
        )
    )


def test_depends_on_names_services_that_can_satisfy_the_condition(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        for target, condition in depends_on(service).items():
            assert target in services, f"{name} depends on missing {target}"
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck"
            if condition == "service_completed_successfully":
                assert services[target].get("restart", "no") == "no", f"{target} restarts"


def test_the_four_services_share_one_image(services: dict[str, dict[str, Any]]) -> None:
    builds = {json.dumps(services[name]["build"], sort_keys=True) for name in PORTS}
    images = {services[name].get("image") for name in PORTS}
    assert len(builds) == 1
    assert len(images) == 1
    build = services["ingest"]["build"]
    context = build if isinstance(build, str) else build["context"]
    assert (ROOT / context / "Dockerfile").is_file()
    for name in PORTS:
        assert services[name]["command"] == [name]


@pytest.mark.parametrize(("name", "port"), PORTS.items())
def test_service_publishes_its_port_and_checks_readiness_there(
    services: dict[str, dict[str, Any]], name: str, port: int
) -> None:
    service = services[name]
    assert environment(service)["OMNIROUTE_HTTP_PORT"] == str(port)
    published = [str(p).split(":") for p in service["ports"]]
    assert [p[-2:] for p in published] == [[str(port), str(port)]]

    test = service["healthcheck"]["test"]
    # python:3.11-slim has no curl: the check runs the image's own Python.
    assert test[:2] == ["CMD", "python"]
    assert f"127.0.0.1:{port}/readyz" in " ".join(test)


@pytest.mark.parametrize("name", PORTS)
def test_service_runs_hardened_and_waits_for_its_backends(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    service = services[name]
    assert service["read_only"] is True
    assert "/tmp" in service["tmpfs"]
    assert service["restart"] == "unless-stopped"
    assert depends_on(service) == {
        "kafka": "service_healthy",
        "mongo": "service_healthy",
        "mongo-init": "service_completed_successfully",
    }
    env = environment(service)
    assert env["OMNIROUTE_ENVIRONMENT"] == "development"
    assert env["OMNIROUTE_API_TOKEN"]


def test_omniroute_variables_are_settings_that_point_at_compose_services(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in PORTS:
        env = environment(services[name])
        unknown = [k for k in env if k.startswith("OMNIROUTE_") and not is_setting(k)]
        assert not unknown, f"{name}: not settings: {unknown}"
        assert env["OMNIROUTE_KAFKA_BOOTSTRAP"] == "kafka:9092"


def compose_default(value: str) -> str:
    """`${NAME:-default}` as Compose fills it in when NAME is not set."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_each_service_has_its_own_database_and_user(
    services: dict[str, dict[str, Any]],
) -> None:
    init = environment(services["mongo-init"])
    for name in PORTS:
        env = environment(services[name])
        database = f"omniroute_{name}"
        assert env["OMNIROUTE_MONGO_DB"] == database
        uri = urlsplit(compose_default(env["OMNIROUTE_MONGO_URI"]))
        # mongodb://omniroute-<service>:<password>@mongo:27017/omniroute_<service>?...
        assert (uri.scheme, uri.hostname, uri.port) == ("mongodb", "mongo", 27017)
        assert uri.username == f"omniroute-{name}"
        assert uri.path == f"/{database}"
        query = parse_qs(uri.query)
        assert query == {"replicaSet": ["rs0"], "authSource": ["admin"]}
        # mongo-init creates the user with the password the service's URI carries.
        assert compose_default(init[f"OMNIROUTE_{name.upper()}_MONGO_PASSWORD"]) == uri.password
    script = (ROOT / "deploy" / "compose" / "mongo-init-replica-set.js").read_text("utf-8")
    assert '["ingest", "router", "sla", "notify"]' in script
    # Its one role: readWrite on its own database.
    assert 'const roles = [{ role: "readWrite", db: "omniroute_" + service }];' in script
    assert "createUser(" in script and "updateUser(" in script  # idempotent


def test_kafka_runs_kraft_with_a_listener_for_the_services(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8").lower()
    assert "zookeeper" not in text
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = environment(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["CLUSTER_ID"]

    # LISTENERS: "NAME://host:port,..."
    def listeners(key: str) -> dict[str, str]:
        return dict(item.split("://") for item in env[key].split(","))

    declared = listeners("KAFKA_LISTENERS")
    advertised = listeners("KAFKA_ADVERTISED_LISTENERS")
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert set(declared) <= set(protocols)
    assert set(advertised) <= set(declared)
    assert controller in declared
    assert controller not in advertised
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    node, _, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert node == str(env["KAFKA_NODE_ID"])
    assert voter.rpartition(":")[2] == declared[controller].rpartition(":")[2]
    # What the services bootstrap from must be advertised as is.
    assert "kafka:9092" in advertised.values()

    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[key] == "1", key
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "9092" in " ".join(kafka["healthcheck"]["test"])
    assert "kafka-data" in compose["volumes"]


def test_mongo_runs_a_replica_set_that_mongo_init_initiates(
    services: dict[str, dict[str, Any]],
) -> None:
    mongo = services["mongo"]
    assert mongo["image"].startswith("mongo:")
    command = mongo["command"]
    assert command[command.index("--replSet") + 1] == "rs0"
    assert "healthcheck" in mongo

    init = services["mongo-init"]
    assert init["image"] == mongo["image"]
    assert depends_on(init) == {"mongo": "service_healthy"}
    assert "mongosh" in init["command"]
    source, _, target = init["volumes"][0].partition(":")
    assert target.partition(":")[0] in init["command"]
    script = (ROOT / source).read_text(encoding="utf-8")
    assert "rs.initiate(" in script
    assert '_id: "rs0"' in script
    assert 'host: "mongo:27017"' in script
    assert "NotYetInitialized" in script, "a second run must not fail on an initiated set"


def test_named_volumes_are_declared_and_bind_mounts_exist(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: {source} missing"
            else:
                assert source in declared, f"{name}: volume {source} not declared"
