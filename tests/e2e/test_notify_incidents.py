"""An incident tells every affected open ticket once, and once more when it is resolved —
across a notify restart in between — on the real broker and store.

100 open tickets are made quickly by producing `MessageReceived` events straight to
`support.messages` (what ingest would publish) and letting the router open them; no
agent is online, so they stay open. Notify runs as its own process; the adapters' HTTP
endpoint runs in this test process and counts deliveries per notification id.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from omniroute.system import DEV_SECRET, DEV_TOKEN, LocalSystem
from shared.contracts.messages import MESSAGE_RECEIVED, Amount, Identity, Signals
from shared.embedded import EmbeddedStack
from shared.events import make_event
from shared.topics import MESSAGES
from tests.support.factories import message
from tests.support.waiting import wait_until
from tests.support.webhook_sink import WebhookSink, running_sink

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": f"Bearer {DEV_TOKEN}"}
AFFECTED = 100


@pytest.fixture(scope="module")
def sink() -> Iterator[WebhookSink]:
    with running_sink(WebhookSink(secrets={"generic": DEV_SECRET})) as running:
        yield running


@pytest.fixture(scope="module")
def system(stack: EmbeddedStack, sink: WebhookSink) -> Iterator[LocalSystem]:
    running = LocalSystem(
        stack,
        log_dir=stack.root / "logs" / "notify_incidents",
        mongo_db="e2e_notify_incidents",
        env_overrides={
            "OMNIROUTE_NOTIFY_WEBHOOK_URLS": json.dumps({"generic": f"{sink.url}/chat"}),
            "OMNIROUTE_NOTIFY_CLAIM_LEASE_S": "2",
            # No sla in this system: acknowledgements go after 1 s without its deadline.
            "OMNIROUTE_NOTIFY_ACK_SLA_WAIT_S": "1",
        },
    )
    try:
        running.start(names=("router", "notify"))
        running.wait_ready(timeout_s=90)
        yield running
    finally:
        running.stop()


async def produce_messages(bootstrap: str, specs: list[tuple[str, str, str]]) -> None:
    """One customer message per (id, category, asset), as ingest would publish it."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for n, (key, category, asset) in enumerate(specs):
            m = message(
                n,
                message_id=f"msg_{key}",
                conversation_id=f"cnv_{key}",
                provider_message_id=f"{key}:m1",
                customer_id=f"cus_{key}",
                identities=(Identity(kind="chat_visitor", value=f"v-{key}"),),
                category=category,
                text=f"my {asset} {category} is stuck",
                signals=Signals(amounts=(Amount(value=1, asset=asset),)),
            )
            ev = make_event(
                m,
                topic=MESSAGES,
                event_type=MESSAGE_RECEIVED,
                event_id=m.message_id,
                source="omniroute/ingest",
                key=m.conversation_id,
                time=m.received_at,
            )
            await producer.send(
                MESSAGES,
                ev.value,
                key=m.conversation_id.encode(),
                headers=[(k, v.encode()) for k, v in ev.headers.items()],
            )
        await producer.flush()
    finally:
        await producer.stop()


def deliveries(sink: WebhookSink, template: str) -> Counter[str]:
    """Accepted deliveries of a template, per ticket."""
    return Counter(d.json["ticket_id"] for d in sink.accepted() if d.json["template"] == template)


def test_incident_updates_each_affected_ticket_once_and_again_at_resolution(
    system: LocalSystem, sink: WebhookSink, db: Any
) -> None:
    run = uuid.uuid4().hex[:6]
    # 100 BTC withdrawal tickets, and 20 that the incident does not concern.
    affected = [(f"{run}-a{n}", "withdrawal", "BTC") for n in range(AFFECTED)]
    others = [(f"{run}-e{n}", "withdrawal", "ETH") for n in range(10)]
    others += [(f"{run}-d{n}", "deposit", "BTC") for n in range(10)]
    asyncio.run(produce_messages(system.stack.kafka_bootstrap, affected + others))
    everyone = len(affected) + len(others)
    wait_until(lambda: len(deliveries(sink, "acknowledgement")) == everyone, 60, "acks")
    tickets = {t["message_ids"][0][4:]: t["_id"] for t in db.tickets.find({}, {"message_ids": 1})}
    affected_tickets = {tickets[k] for k, _, _ in affected}
    other_tickets = {tickets[k] for k, _, _ in others}

    # Ops declare the incident; every affected open ticket hears about it once.
    notify = system.url("notify")
    body = {
        "status": "investigating",
        "severity": "major",
        "title": {"en": "BTC withdrawals delayed", "zh": "BTC 提现延迟"},
        "body": {"en": "Network congestion; funds are safe.", "zh": "网络拥堵，资金安全。"},
        "affected": {"categories": ["withdrawal"], "assets": ["BTC"], "networks": ["btc"]},
    }
    created = httpx.post(f"{notify}/v1/incidents", json=body, headers=AUTH, timeout=10)
    assert created.status_code == 201, created.text
    iid = created.json()["incident_id"]
    assert httpx.post(f"{notify}/v1/incidents", json=body, timeout=10).status_code == 401
    wait_until(lambda: len(deliveries(sink, "incident_update")) == AFFECTED, 60, "updates")
    # A further status change tells nobody again.
    identified = httpx.patch(
        f"{notify}/v1/incidents/{iid}", json={"status": "identified"}, headers=AUTH, timeout=10
    )
    assert identified.status_code == 200
    assert identified.json()["version"] == 2
    wait_until(lambda: db.incidents.find_one({"_id": iid, "version": 2}), 10, "incident version 2")
    info = httpx.get(f"{notify}/v1/incidents/{iid}", headers=AUTH, timeout=10).json()
    assert info["linked_tickets"] == AFFECTED

    # Notify restarts (SIGKILL) between the update and the resolution.
    system.kill("notify")
    system.start_service("notify")
    system.wait_ready(timeout_s=60, names=("notify",))

    resolved = httpx.patch(
        f"{notify}/v1/incidents/{iid}", json={"status": "resolved"}, headers=AUTH, timeout=10
    )
    assert resolved.status_code == 200
    wait_until(lambda: len(deliveries(sink, "incident_resolved")) == AFFECTED, 60, "resolutions")
    # Every resolution was sent by the restarted process: its counter says so.
    sent_metric = (
        'omniroute_notify_notifications_total{channel="chat",outcome="sent",'
        f'template="incident_resolved"}} {AFFECTED}.0'
    )

    def scraped() -> str | None:
        text = httpx.get(f"{notify}/metrics", timeout=10).text
        return text if sent_metric in text else None

    metrics = wait_until(scraped, 10, "resolutions counted")

    updates = deliveries(sink, "incident_update")
    resolutions = deliveries(sink, "incident_resolved")
    assert set(updates) == set(resolutions) == affected_tickets
    assert set(updates.values()) == set(resolutions.values()) == {1}  # exactly once each
    assert not other_tickets & (set(updates) | set(resolutions))
    # The identified update must not have produced a second round: count again at the end.
    assert sum(deliveries(sink, "incident_update").values()) == AFFECTED
    sample = next(d for d in sink.accepted() if d.json["template"] == "incident_update")
    assert "BTC withdrawals delayed" in sample.json["text"]
    assert sample.signature_ok
    assert db.incident_links.count_documents({"incident_id": iid}) == AFFECTED
    assert "omniroute_notify_outbox_depth" in metrics


def test_banners_show_open_incidents_with_caching_headers(system: LocalSystem) -> None:
    notify = system.url("notify")
    body = {
        "severity": "critical",
        "title": {"en": "Deposits on TRON paused", "zh": "TRON 充值暂停"},
        "affected": {"categories": ["deposit"], "networks": ["tron"]},
    }
    created = httpx.post(
        f"{notify}/v1/incidents",
        json=body,
        headers={**AUTH, "Idempotency-Key": f"k-{uuid.uuid4().hex}"},
        timeout=10,
    )
    iid = created.json()["incident_id"]
    reply = httpx.get(f"{notify}/v1/banners", params={"locale": "zh"}, timeout=10)
    assert reply.status_code == 200
    assert reply.headers["cache-control"] == "public, max-age=30"
    titles = {b["id"]: b["title"] for b in reply.json()["banners"]}
    assert titles[iid] == "TRON 充值暂停"
    again = httpx.get(
        f"{notify}/v1/banners",
        params={"locale": "zh"},
        headers={"If-None-Match": reply.headers["etag"]},
        timeout=10,
    )
    assert again.status_code == 304
    httpx.patch(
        f"{notify}/v1/incidents/{iid}", json={"status": "resolved"}, headers=AUTH, timeout=10
    )
    after = httpx.get(f"{notify}/v1/banners", params={"locale": "en"}, timeout=10).json()
    assert iid not in {b["id"] for b in after["banners"]}
    page = httpx.get(f"{notify}/status", headers={"Accept-Language": "zh-CN,zh;q=0.9"}, timeout=10)
    assert '<html lang="zh-Hans">' in page.text
    assert "TRON 充值暂停" in page.text  # recently resolved
