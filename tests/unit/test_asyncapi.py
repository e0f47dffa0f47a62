"""Each service publishes its contract as the AsyncAPI document FastStream generates: every
topic it receives and sends, with the payload's JSON Schema. docs/asyncapi/ holds those
documents; they must match the code and pass the official AsyncAPI CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from omniroute.cli import asyncapi_json

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "asyncapi"
SERVICES = ("ingest", "router", "sla", "notify")

INBOUND = ("support.inbound.email", "support.inbound.social")
INBOUND += ("support.inbound.phone", "support.inbound.chat")
AGENT_EVENTS = {"AgentProfileUpdated", "AgentPresenceChanged", "AgentActionTaken"}
BYTES = "bytes"  # a provider's own payload, not a contract model
ERASURE_EVENTS = {"ErasureRequested", "ErasureCompleted", "LegalHoldChanged"}

# service -> action -> topic -> the models its payload documents
EXPECTED: dict[str, dict[str, dict[str, set[str]]]] = {
    "ingest": {
        "receive": {
            **{t: {BYTES} for t in INBOUND},
            "support.tickets": {"TicketEvent"},  # agents' corrections, for training
            "support.erasures": ERASURE_EVENTS,  # requests, completions (the log), holds
        },
        "send": {
            "support.messages": {"MessageReceived"},
            "support.customers": {"CustomerUpdated"},  # compacted, keyed by customer id
            "support.deadletter": {"DeadLettered"},
            "support.erasures": ERASURE_EVENTS,
            **{t: {BYTES} for t in INBOUND},  # signed webhooks, forwarded as they came
        },
    },
    "router": {
        "receive": {
            t: {"MessageReceived", "SlaEvent", *AGENT_EVENTS, *ERASURE_EVENTS}
            for t in ("support.messages", "support.agents", "support.sla", "support.erasures")
        },
        "send": {
            "support.tickets": {"TicketEvent"},
            "support.erasures": ERASURE_EVENTS,
            "support.deadletter": {"DeadLettered"},
            "support.agents": AGENT_EVENTS,  # the HTTP API's agent actions
        },
    },
    "sla": {
        "receive": {
            t: {"TicketEvent", *ERASURE_EVENTS} for t in ("support.tickets", "support.erasures")
        },
        "send": {
            "support.sla": {"SlaEvent"},
            "support.deadletter": {"DeadLettered"},
            "support.erasures": ERASURE_EVENTS,
        },
    },
    "notify": {
        "receive": {
            **{
                t: {"MessageReceived", "CustomerUpdated", "TicketEvent", "SlaEvent", "Incident"}
                for t in (
                    "support.messages",
                    "support.customers",
                    "support.tickets",
                    "support.sla",
                    "support.incidents",
                )
            },
            "support.erasures": ERASURE_EVENTS,
        },
        "send": {
            "support.notifications": {"NotificationRecorded"},
            "support.incidents": {"Incident"},  # the ops API's incidents
            "support.deadletter": {"DeadLettered"},
            "support.erasures": ERASURE_EVENTS,
        },
    },
}


@pytest.fixture(scope="module")
def documents() -> dict[str, str]:
    # The committed documents are written with the default settings (the server's address
    # comes from OMNIROUTE_KAFKA_BOOTSTRAP).
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("OMNIROUTE_"):
                mp.delenv(name)
        return {s: asyncapi_json(s) for s in SERVICES}


def schema_of(doc: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    assert isinstance(node, dict)
    return node


def models(doc: dict[str, Any], schema: dict[str, Any]) -> set[str]:
    """The contract models a payload schema documents (`bytes` for raw payloads)."""
    if "$ref" in schema:
        target = schema_of(doc, schema["$ref"])
        if target.get("type") == "object":
            return {schema["$ref"].rsplit("/", 1)[-1]}
        return models(doc, target)
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            return set().union(*(models(doc, s) for s in schema[key]))
    assert schema.get("type") == "string" and schema.get("format") == "binary", schema
    return {BYTES}


def topics(doc: dict[str, Any], action: str) -> dict[str, set[str]]:
    """topic -> the models of its payload, for every operation of `action`."""
    out: dict[str, set[str]] = {}
    for op in doc["operations"].values():
        if op["action"] != action:
            continue
        channel = schema_of(doc, op["channel"]["$ref"])
        for message_ref in op["messages"]:
            message = schema_of(doc, schema_of(doc, message_ref["$ref"])["$ref"])
            found = models(doc, message["payload"])
            out.setdefault(channel["address"], set()).update(found)
    return out


@pytest.mark.parametrize("service", SERVICES)
def test_the_document_shows_every_topic_received_and_sent_with_its_payload(
    service: str, documents: dict[str, str]
) -> None:
    doc = json.loads(documents[service])
    assert doc["asyncapi"].startswith("3.")
    assert topics(doc, "receive") == EXPECTED[service]["receive"]
    assert topics(doc, "send") == EXPECTED[service]["send"]


@pytest.mark.parametrize("service", SERVICES)
def test_channels_and_payload_models_explain_themselves(
    service: str, documents: dict[str, str]
) -> None:
    doc = json.loads(documents[service])
    assert "CloudEvents" in doc["info"]["description"]
    assert all(c.get("description") for c in doc["channels"].values())
    schemas = doc["components"]["schemas"]
    payloads = {m for action in EXPECTED[service].values() for ms in action.values() for m in ms}
    for name in payloads - {BYTES}:
        assert schemas[name].get("description"), f"{name} has no description (docstring)"
        assert schemas[name]["properties"]
    for schema in schemas.values():
        if schema.get("format") == "binary":
            assert "provider" in schema["description"]  # raw payloads say which formats


def test_every_receiver_reads_what_is_sent_on_its_topics(documents: dict[str, str]) -> None:
    # Across services: each model a service sends on a topic is one its readers document.
    docs = {s: json.loads(d) for s, d in documents.items()}
    sent: dict[str, set[str]] = {}
    for doc in docs.values():
        for topic, found in topics(doc, "send").items():
            sent.setdefault(topic, set()).update(found)
    for service, doc in docs.items():
        for topic, read in topics(doc, "receive").items():
            assert sent.get(topic, set()) <= read, (service, topic)
    # Only adapters and desks (outside omniroute) send what no service sends itself.
    received = {t for doc in docs.values() for t in topics(doc, "receive")}
    assert received - set(sent) == set()


@pytest.mark.parametrize("service", SERVICES)
def test_the_committed_document_is_the_one_the_code_generates(
    service: str, documents: dict[str, str]
) -> None:
    committed = (DOCS / f"{service}.json").read_text(encoding="utf-8")
    assert committed == documents[service] + "\n", (
        f"docs/asyncapi/{service}.json differs from the code: run `make asyncapi`"
    )


def asyncapi_cli() -> str:
    """The CLI package the Makefile installs (one version for both)."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    match = re.search(r"^ASYNCAPI_CLI := (\S+)$", makefile, re.MULTILINE)
    assert match, "the Makefile pins ASYNCAPI_CLI"
    return match.group(1)


def test_the_committed_documents_pass_the_official_asyncapi_cli(tmp_path: Path) -> None:
    npx = shutil.which("npx")
    if npx is None:
        pytest.skip("npx (Node.js) is not on PATH: the AsyncAPI CLI cannot run")
    env = {
        **os.environ,
        "CI": "true",  # no usage metrics sent
        "ASYNCAPI_METRICS_CONFIG_PATH": str(tmp_path / "asyncapi-analytics.json"),
    }
    # npx uses the global install (`make test`) or downloads that version once; in parallel,
    # one Node process per document.
    runs = {
        service: subprocess.Popen(
            [npx, "--yes", asyncapi_cli(), "validate", "--fail-severity", "warn", str(path)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for service in SERVICES
        for path in [DOCS / f"{service}.json"]
    }
    for service, run in runs.items():
        out, _ = run.communicate(timeout=600)
        assert run.returncode == 0, f"{service}: {out}"
        assert "is valid" in out, out
