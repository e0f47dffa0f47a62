"""Ingest's edges with in-memory fakes: the batch handler and the signed webhook."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from omniroute.samples import chat_message
from services.ingest.handlers import Inbound, Ingestor
from services.ingest.http import SIGNATURE_HEADER, make_routes, sign
from services.ingest.metrics import IngestMetrics
from services.ingest.pipeline import IngestPolicy
from shared.access import Access
from shared.audit import MemoryAuditLog
from shared.settings import IngestSettings
from tests.support.classifier import classify_policy, text_model
from tests.support.fakes import FakeCustomerStore, FakeTrainingStore

SECRET = "test-secret-1"


@pytest.fixture
def ingestor() -> Ingestor:
    return Ingestor(
        customers=FakeCustomerStore(),
        rules=classify_policy(),
        model=text_model(),
        texts=FakeTrainingStore(),
        policy=IngestPolicy(),
        metrics=IngestMetrics.create(CollectorRegistry()),
    )


def chat(n: int, text: str = "my deposit has not arrived", **kw: Any) -> Inbound:
    return Inbound("chat", "generic", chat_message(f"s{n}", f"m{n}", text, **kw))


async def test_bad_payloads_are_dead_lettered_and_neighbours_arrive(ingestor: Ingestor) -> None:
    hostile = json.dumps({"session_id": {"$gt": ""}, "message_id": "$where", "text": 1}).encode()
    batch = [
        chat(1),
        Inbound("chat", "generic", b"\xff\xfe not json"),
        Inbound("chat", "generic", hostile),
        Inbound("chat", None, b"<html>unknown format</html>"),
        chat(2, "how do I withdraw to my bank?"),
    ]
    events = await ingestor.process(batch)
    messages = [json.loads(e.value) for e in events if e.topic == "support.messages"]
    dead = [json.loads(e.value) for e in events if e.topic == "support.deadletter"]
    assert [m["provider_message_id"] for m in messages] == ["s1:m1", "s2:m2"]
    assert messages[0]["category"] == "deposit"
    assert messages[1]["category"] != "withdrawal"
    assert len(dead) == 3
    assert all(d["reason"] and d["service"] == "ingest" for d in dead)
    assert dead[0]["payload"].startswith("\ufffd")  # invalid UTF-8 kept, visibly replaced


async def test_same_message_twice_in_a_batch_is_one_event(ingestor: Ingestor) -> None:
    events = await ingestor.process([chat(1), chat(1)])
    assert len([e for e in events if e.topic == "support.messages"]) == 1


async def test_secrets_never_leave_ingest(ingestor: Ingestor) -> None:
    from mnemonic import Mnemonic

    phrase = Mnemonic("english").generate(128)
    key = "private key: " + "ab" * 32
    events = await ingestor.process(
        [
            chat(1, f"help, my seed is {phrase}"),
            chat(2, key),
            Inbound("chat", "generic", f"{phrase} {{".encode()),
        ]
    )
    blob = b"".join(e.value for e in events).decode()
    assert phrase not in blob
    assert "ab" * 32 not in blob
    first = next(json.loads(e.value) for e in events if e.topic == "support.messages")
    assert first["category"] == "secret_exposed"
    assert {"kind": "seed_phrase", "count": 1} in first["redactions"]


@dataclass
class FakeBroker:
    published: list[tuple[bytes, str, dict[str, str]]] = field(default_factory=list)

    async def publish(
        self,
        body: bytes,
        topic: str,
        *,
        key: Any = None,
        headers: dict[str, str] | None = None,
        **_: Any,
    ) -> None:
        self.published.append((body, topic, headers or {}))


@pytest.fixture
def webhook() -> tuple[httpx.AsyncClient, FakeBroker]:
    from pydantic import SecretStr

    settings = IngestSettings(webhook_secrets={"generic": SecretStr(SECRET)}, max_body_bytes=4096)
    broker = FakeBroker()
    routes = make_routes(
        settings,
        broker,
        FakeCustomerStore(),
        IngestPolicy(),  # type: ignore[arg-type]
        metrics := IngestMetrics.create(CollectorRegistry()),
        access=Access.create(settings, MemoryAuditLog(), metrics.access),
    )
    transport = httpx.ASGITransport(app=Starlette(routes=routes))
    return httpx.AsyncClient(transport=transport, base_url="http://ingest"), broker


async def test_webhook_status_codes(webhook: tuple[httpx.AsyncClient, FakeBroker]) -> None:
    client, broker = webhook
    url = "/v1/inbound/chat/generic"
    body = chat_message("s1", "m1", "my withdrawal is stuck")

    async def status(path: str, content: bytes, signature: str | None = None) -> int:
        headers = {SIGNATURE_HEADER: signature} if signature else {}
        return (await client.post(path, content=content, headers=headers)).status_code

    assert await status(url, body) == 401
    assert await status(url, body, "sha256=00") == 401
    assert await status("/v1/inbound/chat/nope", body) == 404
    big = b"x" * 5000
    assert await status(url, big, sign(SECRET, big)) == 413
    bad = b'{"session_id": 1}'
    reply = await client.post(url, content=bad, headers={SIGNATURE_HEADER: sign(SECRET, bad)})
    assert reply.status_code == 422
    assert reply.json()["error"]
    assert broker.published == []  # nothing refused was published
    ok = await client.post(url, content=body, headers={SIGNATURE_HEADER: sign(SECRET, body)})
    assert ok.status_code == 202
    assert len(ok.json()["message_ids"]) == 1
    [(raw, topic, headers)] = broker.published
    assert (raw, topic, headers["provider"]) == (body, "support.inbound.chat", "generic")
