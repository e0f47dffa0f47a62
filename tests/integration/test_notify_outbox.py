"""The outbox on real MongoDB (SecantusDB) with a real HTTP receiver: retries with backoff,
dead letters after the last attempt, routes that arrive late, racing replicas."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from services.notify.decide import on_ticket_event
from services.notify.delivery import Delivery, DeliveryConfig
from services.notify.handlers import announce, notification_of_spec
from services.notify.metrics import NotifyMetrics
from services.notify.outbox import RateRule
from services.notify.render import load_templates, render
from services.notify.route import route_updates
from services.notify.senders import Transports
from services.notify.store import NotifyStores, mongo_stores
from services.notify.store.outbox import notification_of
from shared.events import OutboundEvent
from shared.settings import REPO_POLICY_DIR
from tests.support.factories import message, ticket_event
from tests.support.waiting import await_until
from tests.support.webhook_sink import WebhookSink, running_sink

pytestmark = pytest.mark.integration
SECRET = "integration-secret"
TEMPLATES = load_templates(REPO_POLICY_DIR / "templates.yaml")
FAST = DeliveryConfig(
    retry_base_s=0.05,
    retry_max_s=0.2,
    max_attempts=3,
    lease_s=5,
    poll_interval_s=0.02,
    rate=RateRule(100, 60),
)


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    with running_sink(WebhookSink(secrets={"generic": SECRET})) as running:
        yield running


class Published(list[OutboundEvent]):
    async def __call__(self, events: Sequence[OutboundEvent]) -> int:
        self.extend(events)
        return len(events)

    def types(self, nid: str) -> list[str]:
        return [
            e.type
            for e in self
            if e.topic == "support.notifications" and json.loads(e.value)["notification_id"] == nid
        ]


async def seed(store: NotifyStores, n: int, *, route: bool = True) -> list[str]:
    """n chat tickets opened (acknowledgements in the outbox), with their routes."""
    now = datetime.now(UTC)
    docs = []
    msgs = []
    for i in range(n):
        ev = ticket_event("opened", 1, ticket_id=f"tkt_{i}", conversation_id=f"cnv_{i}")
        _, [spec] = on_ticket_event(None, ev, f"evt_{i}")
        spec = spec.__class__(**{**spec.__dict__, "customer_id": f"cus_{i}"})
        docs.append(
            notification_of_spec(
                spec, render(TEMPLATES, spec.template, "en", ticket_ref=spec.ticket_id), now
            )
        )
        msgs.append(message(i, conversation_id=f"cnv_{i}", customer_id=f"cus_{i}"))
    await store.ensure_indexes()
    assert len(await store.outbox.add(docs)) == n
    if route:
        await store.conversations.save(route_updates(msgs, now, 3600))
    return [d.notification_id for d in docs]


def delivery(
    store: NotifyStores,
    sink: WebhookSink,
    client: httpx.AsyncClient,
    published: Published,
    **over: Any,
) -> Delivery:
    transports = Transports(
        smtp=None,
        urls={"generic": f"{sink.url}/chat"},
        secrets={"generic": SecretStr(SECRET)},
        client=client,
    )
    return Delivery(
        stores=store,
        transports=transports,
        publish=published,
        announce=announce,
        metrics=NotifyMetrics.create(CollectorRegistry()),
        config=over.pop("config", FAST),
        **over,
    )


async def drain(d: Delivery, db: Any, ids: list[str], final: set[str]) -> None:
    async def done() -> bool:
        await d.run_once()
        n = await db.notifications.count_documents(
            {"_id": {"$in": ids}, "status": {"$in": sorted(final)}}
        )
        return n == len(ids)

    await await_until(done, 20, f"notifications {sorted(final)}")


async def test_a_sender_failing_twice_then_succeeding_delivers_exactly_once(
    notify_db: Any, sink: WebhookSink
) -> None:
    store = mongo_stores(notify_db)
    [nid] = await seed(store, 1)
    sink.fail_first[nid] = 2  # the adapter answers 503 twice
    published = Published()
    async with httpx.AsyncClient(timeout=5) as client:
        d = delivery(store, sink, client, published)
        await drain(d, notify_db, [nid], {"sent"})
    assert sink.counts() == {nid: 1}
    assert [x.status for x in sink.deliveries] == [503, 503, 200]
    assert all(x.signature_ok for x in sink.deliveries)
    doc = await notify_db.notifications.find_one({"_id": nid})
    assert (doc["status"], doc["attempts"]) == ("sent", 3)
    assert published.types(nid) == [
        "omniroute.notification.failed.v1",
        "omniroute.notification.failed.v1",
        "omniroute.notification.sent.v1",
    ]
    assert not [e for e in published if e.topic == "support.deadletter"]


async def test_a_sender_that_always_fails_ends_in_the_dead_letter_after_n_tries(
    notify_db: Any, sink: WebhookSink
) -> None:
    store = mongo_stores(notify_db)
    [nid] = await seed(store, 1)
    sink.respond = lambda data: 500
    published = Published()
    async with httpx.AsyncClient(timeout=5) as client:
        d = delivery(store, sink, client, published)
        await drain(d, notify_db, [nid], {"dead"})
        # Nothing more happens to a dead notification.
        assert await d.run_once() == 0
    assert len(sink.deliveries) == FAST.max_attempts
    doc = await notify_db.notifications.find_one({"_id": nid})
    assert (doc["status"], doc["attempts"]) == ("dead", 3)
    [letter] = [e for e in published if e.topic == "support.deadletter"]
    data = json.loads(letter.value)
    assert data["reason"] == "notification undeliverable"
    assert data["detail"] == "delivery failed after 3 attempts: http 500"
    # No personal data in the dead letter: ids and the template, not the text or address.
    assert json.loads(data["payload"])["_id"] == nid
    assert "never ask" not in letter.value.decode()
    assert published.types(nid)[-1] == "omniroute.notification.dead.v1"


async def test_a_refusal_is_dead_at_once_and_a_missing_route_waits(
    notify_db: Any, sink: WebhookSink
) -> None:
    store = mongo_stores(notify_db)
    [refused] = await seed(store, 1)
    sink.respond = lambda data: 400 if data["notification_id"] == refused else None
    published = Published()
    async with httpx.AsyncClient(timeout=5) as client:
        d = delivery(store, sink, client, published)
        await drain(d, notify_db, [refused], {"dead"})
        assert len(sink.deliveries) == 1  # 400 is permanent: no retry
        # A notification whose conversation is not known yet waits for its route.
        later = datetime.now(UTC)
        ev = ticket_event("opened", 1, ticket_id="tkt_late", conversation_id="cnv_late")
        _, [spec] = on_ticket_event(None, ev, "evt_late")
        late = notification_of_spec(
            spec, render(TEMPLATES, spec.template, "en", ticket_ref="t"), later
        )
        await store.outbox.add([late])
        for _ in range(3):
            await d.run_once()
        waiting = await notify_db.notifications.find_one({"_id": late.notification_id})
        assert (waiting["status"], waiting["last_error"]) == ("pending", "route unknown")
        assert waiting["attempts"] == 0
        await store.conversations.save(
            route_updates([message(99, conversation_id="cnv_late")], later, 3600)
        )
        await drain(d, notify_db, [late.notification_id], {"sent"})
    assert sink.counts()[late.notification_id] == 1


async def test_two_replicas_racing_send_each_notification_once(
    notify_db: Any, sink: WebhookSink
) -> None:
    store_a, store_b = mongo_stores(notify_db), mongo_stores(notify_db)
    ids = await seed(store_a, 30)
    published = Published()
    async with httpx.AsyncClient(timeout=5) as client:
        a = delivery(store_a, sink, client, published, owner="replica-a")
        b = delivery(store_b, sink, client, published, owner="replica-b")

        async def both() -> bool:
            await asyncio.gather(a.run_once(), b.run_once())
            n = await notify_db.notifications.count_documents(
                {"_id": {"$in": ids}, "status": "sent"}
            )
            return n == len(ids)

        await await_until(both, 20, "all sent")
    assert set(sink.counts().values()) == {1}
    assert len(sink.counts()) == 30
    owners = {d["owner"] async for d in notify_db.notifications.find({"_id": {"$in": ids}})}
    assert owners <= {"replica-a", "replica-b"}


async def test_a_dead_senders_claim_is_taken_over_after_its_lease(
    notify_db: Any, sink: WebhookSink
) -> None:
    store = mongo_stores(notify_db)
    [nid] = await seed(store, 1)
    # A replica claimed it and died before sending (its lease ends in the past).
    doc = await notify_db.notifications.find_one({"_id": nid})
    assert await store.outbox.claim(
        notification_of(doc), "dead-replica", "claim-1", datetime.now(UTC)
    )
    published = Published()
    async with httpx.AsyncClient(timeout=5) as client:
        d = delivery(store, sink, client, published, owner="survivor")
        await drain(d, notify_db, [nid], {"sent"})
    final = await notify_db.notifications.find_one({"_id": nid})
    assert (final["owner"], final["attempts"]) == ("survivor", 2)
    assert sink.counts() == {nid: 1}
    # The dead replica's late finish cannot overwrite the survivor's work.
    assert not await store.outbox.mark_dead(nid, "claim-1", "late", datetime.now(UTC))
