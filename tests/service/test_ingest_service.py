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
from services.ingest.customers import CustomerRecord
from services.ingest.handlers import Ingestor
from services.ingest.http import SIGNATURE_HEADER, make_routes, sign
from services.ingest.intake import Inbound
from services.ingest.metrics import IngestMetrics
from services.ingest.pipeline import IngestPolicy
from shared.access import Access
from shared.audit import MemoryAuditLog
from shared.contracts.messages import Identity
from shared.settings import IngestSettings
from shared.topics import CUSTOMERS, MESSAGES
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


async def test_messages_carry_the_customers_facts_and_new_customers_are_announced_once() -> None:
    customers = FakeCustomerStore()
    ingestor = Ingestor(
        customers=customers,
        rules=classify_policy(),
        model=text_model(),
        texts=FakeTrainingStore(),
        policy=IngestPolicy(),
        metrics=IngestMetrics.create(CollectorRegistry()),
    )
    # The exchange loaded Mei (code, language); Bo writes in unknown.
    mei = Identity(kind="email", value="mei@example.com")
    await customers.upsert(CustomerRecord("cus_mei", (mei,), "vip2", "OWL-7731", "zh"))
    batch = [
        chat(1, email="mei@example.com", visitor_id="v-mei"),
        chat(2, email="bo@example.com", visitor_id="v-bo"),
        chat(3, "and another thing", email="bo@example.com", visitor_id="v-bo"),
    ]
    events = await ingestor.process(batch)
    messages = {
        m["customer_id"]: m for m in (json.loads(e.value) for e in events if e.topic == MESSAGES)
    }
    assert messages["cus_mei"]["anti_phishing_code"] == "OWL-7731"
    assert messages["cus_mei"]["customer_language"] == "zh"
    assert messages["cus_mei"]["customer_tier"] == "vip2"
    [bo] = [cid for cid in messages if cid != "cus_mei"]
    assert messages[bo]["anti_phishing_code"] is None
    # Bo is new: one record on support.customers, keyed by his id, version 1; Mei is not.
    [announced] = [e for e in events if e.topic == CUSTOMERS]
    record = json.loads(announced.value)
    assert (announced.key, record["customer_id"], record["version"]) == (bo, bo, 1)
    assert announced.headers["ce_type"] == "omniroute.customer.updated.v1"
    # Seen again, he is known: nothing more to announce.
    again = await ingestor.process([chat(4, email="bo@example.com", visitor_id="v-bo")])
    assert [e for e in again if e.topic == CUSTOMERS] == []


async def test_put_customer_publishes_each_change_with_a_growing_version(
    webhook: tuple[httpx.AsyncClient, FakeBroker],
) -> None:
    client, broker = webhook
    auth = {"Authorization": "Bearer dev-token"}
    body = {"identities": [{"kind": "email", "value": "mei@example.com"}], "tier": "vip1"}
    first = await client.put("/v1/customers/cus_mei", json=body, headers=auth)
    body |= {"anti_phishing_code": "NEW-CODE-9", "language": "zh"}
    second = await client.put("/v1/customers/cus_mei", json=body, headers=auth)
    assert (first.status_code, second.status_code) == (200, 200)
    assert (first.json()["version"], second.json()["version"]) == (1, 2)
    records = [json.loads(raw) for raw, topic, _ in broker.published if topic == CUSTOMERS]
    assert [(r["customer_id"], r["version"]) for r in records] == [("cus_mei", 1), ("cus_mei", 2)]
    assert records[1]["anti_phishing_code"] == "NEW-CODE-9"
    assert (records[1]["language"], records[1]["tier"]) == ("zh", "vip1")
    # A refused body publishes nothing.
    bad = await client.put("/v1/customers/cus_mei", json={"identities": []}, headers=auth)
    assert bad.status_code == 422
    assert len([t for _, t, _ in broker.published if t == CUSTOMERS]) == 2
