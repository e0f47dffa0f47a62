"""The outbox on real MongoDB (SecantusDB) with a real HTTP receiver: what the recording
process holds it sends with no claim write and marks per round; retries with backoff, dead
letters after the last attempt, routes that arrive late, racing replicas, and a dead
sender's notifications taken over after its lease."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from pymongo import AsyncMongoClient, monitoring

from services.notify.decide import on_ticket_event
from services.notify.delivery import Delivery, DeliveryConfig, Held
from services.notify.metrics import NotifyMetrics
from services.notify.outbox import RateRule
from services.notify.record import announce, notification_of_spec
from services.notify.render import load_templates, render
from services.notify.route import route_updates
from services.notify.senders import Transports
from services.notify.store import NotifyStores, mongo_stores
from shared.embedded import EmbeddedStack
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
    sweep_interval_s=0,  # the sweeper looks on every pass (it takes over what seed adds)
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


async def seed(
    store: NotifyStores,
    n: int,
    *,
    route: bool = True,
    held: Held | None = None,
    now: datetime | None = None,
) -> list[str]:
    """n chat tickets opened (acknowledgements in the outbox, held by `held`'s process as
    its consumer records them; pending for a sweeper without), with their routes."""
    now = now or datetime.now(UTC)
    docs = []
    msgs = []
    for i in range(n):
        ev = ticket_event("opened", 1, ticket_id=f"tkt_{i}", conversation_id=f"cnv_{i}")
        _, [spec] = on_ticket_event(None, ev, f"evt_{i}")
        spec = spec.__class__(**{**spec.__dict__, "customer_id": f"cus_{i}"})
        doc = notification_of_spec(
            spec, render(TEMPLATES, spec.template, "en", ticket_ref=spec.ticket_id), now
        )
        docs.append(held.claim(doc, now) if held else doc)
        msgs.append(message(i, conversation_id=f"cnv_{i}", customer_id=f"cus_{i}"))
    await store.ensure_indexes()
    assert len(await store.outbox.add(docs)) == n
    if held:
        held.take(docs)
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
        # Held by the sender, which tries again later (no attempt spent on it).
        waiting = await notify_db.notifications.find_one({"_id": late.notification_id})
        assert (waiting["status"], waiting["last_error"]) == ("sending", "route unknown")
        assert (waiting["attempts"], waiting["waits"] >= 1) == (0, True)
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
    # A replica recorded it (held by it) and died before sending: its lease has run out.
    dead = Held(owner="dead-replica", lease_s=1)
    [nid] = await seed(store, 1, held=dead, now=datetime.now(UTC) - timedelta(seconds=5))
    published = Published()
    async with httpx.AsyncClient(timeout=5) as client:
        d = delivery(store, sink, client, published, owner="survivor")
        await drain(d, notify_db, [nid], {"sent"})
    final = await notify_db.notifications.find_one({"_id": nid})
    # The lost try counts as an attempt (a notification that kills its sender ends dead).
    assert (final["owner"], final["attempts"]) == ("survivor", 2)
    assert sink.counts() == {nid: 1}
    # The dead replica's late write cannot overwrite the survivor's work.
    [late] = dead.items.values()
    assert await store.outbox.write([replace(late, status="dead")], dead.claim_id) == 0
    assert (await notify_db.notifications.find_one({"_id": nid}))["status"] == "sent"


async def test_what_the_recording_process_holds_is_sent_without_a_claim_write(
    stack: EmbeddedStack, notify_db: Any, sink: WebhookSink
) -> None:
    # Statements on the notify store, counted by the driver (one client for the test).
    counter = Statements()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        stack.mongo_uri("notify"), tz_aware=True, event_listeners=[counter]
    )
    try:
        store = mongo_stores(client[notify_db.name])
        await store.ensure_indexes()
        # (The sink's listen queue takes 5 connections at once.)
        config = replace(FAST, concurrency=4)
        held = Held(owner="recorder", lease_s=config.lease_s)
        ids = await seed(store, 12, held=held)
        counter.seen.clear()
        published = Published()
        async with httpx.AsyncClient(timeout=5) as http:
            d = delivery(store, sink, http, published, config=config, held=held)
            assert await d.run_once() == 12  # all held: the pass needs no claim
        assert sink.counts() == dict.fromkeys(ids, 1)
        sent = await notify_db.notifications.count_documents(
            {"_id": {"$in": ids}, "status": "sent", "owner": "recorder"}
        )
        assert sent == 12
        assert not held.items  # finished ones are no longer held
        # One write per round of 4 sends (3 rounds), no statement per notification:
        # reads of routes and the rate limit's sent times, the sweeper's two looks.
        assert counter.writes() == 3
        assert counter.count("update") == 3
        assert counter.count("find") <= 4
    finally:
        await client.close()


async def test_indexes_are_the_ones_queries_use_and_old_ones_are_dropped(notify_db: Any) -> None:
    # An old deployment's outbox: a document without `due_at`, the previous claim indexes.
    store = mongo_stores(notify_db)
    [old] = await seed(store, 1)
    await notify_db.notifications.update_one({"_id": old}, {"$unset": {"due_at": 1}})
    await notify_db.notifications.create_index([("status", 1), ("next_at", 1)])
    await notify_db.notifications.create_index([("status", 1), ("lease_until", 1)])
    await store.ensure_indexes()
    await store.ensure_indexes()  # idempotent
    names = set(await notify_db.notifications.index_information())
    assert names == {"_id_", "status_1_due_at_1", "customer_id_1_sent_at_1"}
    # The old document is due to the sweeper at once.
    taken = await store.outbox.take_over(datetime.now(UTC), "me", "c1", datetime.now(UTC), 10)
    assert [n.notification_id for n in taken] == [old]


class Statements(monitoring.CommandListener):
    """The driver's commands by name."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.seen.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        return None

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        return None

    def count(self, name: str) -> int:
        return self.seen.count(name)

    def writes(self) -> int:
        return sum(self.count(n) for n in ("insert", "update", "delete"))
