"""Every caller only where it belongs: each service's routes, walked one by one, in memory.

The apps are built as in production (`build_app`), with fake stores and FastStream's
in-memory broker, so a route added anywhere — `http.py` or `app.py` — is walked here too:
a new route that is neither public nor guarded fails this suite.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from pymongo import AsyncMongoClient
from starlette.routing import Route

from omniroute.samples import chat_message
from services.ingest.app import build_app as ingest_app
from services.ingest.http import SIGNATURE_HEADER, sign
from services.notify.app import build_app as notify_app
from services.router.app import build_app as router_app
from services.sla.app import build_app as sla_app
from shared.access import PUBLIC_PATHS, GuardedRoute
from shared.audit import MemoryAuditLog
from shared.contracts.agents import AGENT_ACTION_TAKEN, AgentActionTaken
from shared.contracts.common import PROVIDERS_BY_CHANNEL
from shared.events import make_event, publish_all
from shared.journal import MemoryJournal
from shared.scopes import SCOPES, TICKETS_ACT, TICKETS_ACT_AS
from shared.service import ServiceApp
from shared.settings import IngestSettings, NotifySettings, RouterSettings, SlaSettings
from shared.topics import AGENTS, TICKETS
from shared.wiring import Given
from tests.support.access import Issuer, Keys
from tests.support.classifier import text_model
from tests.support.factories import T0, message_event
from tests.support.fakes import (
    FakeCustomerStore,
    FakeNotify,
    FakeRouterStore,
    FakeSlaStore,
    FakeTrainingStore,
    HeldLease,
)
from tests.support.kafka import captured
from tests.support.waiting import await_until

PROVIDERS = sorted({p for ps in PROVIDERS_BY_CHANNEL.values() for p in ps})
SECRETS = {p: f"{p}-webhook-secret-0123456789" for p in PROVIDERS}
ISSUER = Issuer()


def slug(scope: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", scope)


def all_keys() -> Keys:
    """Per scope: a key with every other scope, and one with it (and act-as, so acting
    routes pass their agent check too)."""
    keys = Keys()
    for scope in SCOPES:
        keys.add(f"all-but-{slug(scope)}", [s for s in SCOPES if s != scope])
        keys.add(f"with-{slug(scope)}", sorted({scope, TICKETS_ACT_AS}))
    return keys


@dataclass
class System:
    apps: dict[str, ServiceApp]
    router_store: FakeRouterStore
    registries: dict[str, CollectorRegistry]
    # One in-memory broker per service: FastStream's test broker calls subscribers inline,
    # so one shared broker would re-enter the router's engine from its own publishing.
    brokers: dict[str, KafkaBroker]

    @property
    def broker(self) -> KafkaBroker:
        return self.brokers["router"]

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[System]:
        async with contextlib.AsyncExitStack() as stack:
            for broker in self.brokers.values():
                await stack.enter_async_context(TestKafkaBroker(broker))
            yield self

    def client(self, service: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.apps[service], raise_app_exceptions=False)
        return httpx.AsyncClient(transport=transport, base_url=f"http://{service}")


def build(keys: Keys, **overrides: Any) -> System:
    """The four apps on one in-memory broker, with `keys` and the test issuer's JWTs."""
    common: dict[str, Any] = {
        "api_keys": keys.entries,
        "kafka_create_topics": False,
        **ISSUER.settings(),
        **overrides,
    }
    services = ("ingest", "router", "sla", "notify")
    brokers = {s: KafkaBroker("127.0.0.1:1") for s in services}
    registries = {s: CollectorRegistry() for s in services}
    never = AsyncMongoClient[dict[str, Any]](connect=False)
    secrets = {p: SecretStr(s) for p, s in SECRETS.items()}
    router_store = FakeRouterStore()

    def given(service: str, **engine: Any) -> Given:
        return Given(
            broker=brokers[service],
            mongo=never,
            registry=registries[service],
            audit=MemoryAuditLog(),
            **engine,
        )

    apps = {
        "ingest": ingest_app(
            IngestSettings(**common, webhook_secrets=secrets),
            given("ingest"),
            customers=FakeCustomerStore(),
            texts=FakeTrainingStore(),
            model=text_model(),
        ),
        "router": router_app(
            RouterSettings(**common),
            given("router", inputs=brokers["router"], journal=MemoryJournal(), lease=HeldLease()),
            store=router_store,
        ),
        "sla": sla_app(
            SlaSettings(**common),
            given("sla", inputs=brokers["sla"], journal=MemoryJournal(), lease=HeldLease()),
            store=FakeSlaStore(),
        ),
        "notify": notify_app(
            NotifySettings(**common),
            given("notify"),
            stores=FakeNotify().stores,
            start_sender=False,
        ),
    }
    return System(apps, router_store, registries, brokers)


def routes(app: ServiceApp) -> Iterator[tuple[str, Route]]:
    for route in app.http.routes:
        assert isinstance(route, Route), f"{route!r}: only plain routes are expected"
        for method in sorted(route.methods or ()):
            if method != "HEAD":
                yield method, route


def concrete(path: str) -> str:
    fill = {"action": "resolve", "channel": "chat", "provider": "generic"}
    return re.sub(r"{(\w+)}", lambda m: fill.get(m.group(1), "x1"), path)


def audit_of(route: GuardedRoute) -> MemoryAuditLog:
    audit = route.access.audit
    assert isinstance(audit, MemoryAuditLog)
    return audit


KEYS = all_keys()


@pytest.fixture
async def system() -> AsyncIterator[System]:
    async with build(KEYS).running() as running:
        yield running


async def test_only_the_five_public_paths_are_unguarded(system: System) -> None:
    public: set[str] = set()
    for name, app in system.apps.items():
        for method, route in routes(app):
            if isinstance(route, GuardedRoute):
                assert route.path not in PUBLIC_PATHS
                continue
            # Anything else must be one of the public pages, read-only.
            assert route.path in PUBLIC_PATHS, f"{name}: {method} {route.path} is unguarded"
            assert method == "GET", f"{name}: {method} {route.path} writes without a credential"
            public.add(route.path)
    assert public == {"/healthz", "/readyz", "/metrics", "/v1/banners", "/status"}


async def test_every_guarded_route_refuses_no_credential_and_a_wrong_scope(
    system: System,
) -> None:
    keys = KEYS
    walked = 0
    for name, app in system.apps.items():
        async with system.client(name) as client:
            for method, route in routes(app):
                if not isinstance(route, GuardedRoute) or route.credential != "bearer":
                    continue
                walked += 1
                url, what = concrete(route.path), f"{name}: {method} {route.path}"
                scope = route.required_scope
                assert scope in SCOPES, what

                async def status(
                    headers: dict[str, str], url: str = url, method: str = method
                ) -> int:
                    reply = await client.request(method, url, headers=headers, json={})
                    return reply.status_code

                # No credential, a malformed one, a forged key, the development key's
                # cousin: 401.
                assert await status({}) == 401, what
                assert await status({"Authorization": "Basic YTpi"}) == 401, what
                forged = keys.tokens[f"with-{slug(scope)}"][:-4] + "AAAA"
                assert await status({"Authorization": f"Bearer {forged}"}) == 401, what
                assert await status({"Authorization": "Bearer not-the-dev-token"}) == 401, what
                # Every scope but the route's, as a key and as a desk JWT: 403.
                others = [s for s in SCOPES if s != scope]
                assert await status(keys.auth(f"all-but-{slug(scope)}")) == 403, what
                assert await status(ISSUER.auth("alice", others)) == 403, what
                # The route's scope opens it (what follows is the handler's answer).
                assert await status(keys.auth(f"with-{slug(scope)}")) not in (401, 403), what
                if method != "GET":
                    # Writes are audited, refused ones included; reads are not.
                    entries = [
                        e for e in audit_of(route).entries if e["route"] == f"{method} {route.path}"
                    ]
                    assert {e["outcome"] for e in entries} >= {"forbidden"}, what
                    assert {e["caller"] for e in entries} >= {
                        f"key:all-but-{slug(scope)}",
                        f"key:with-{slug(scope)}",
                    }, what
    assert walked >= 11  # router 8, notify 4 (banners and status are public), ingest 1


async def test_webhooks_need_their_own_providers_signature(system: System) -> None:
    body = b'{"session_id": "s1", "message_id": "m1", "text": "hi"}'
    async with system.client("ingest") as client:
        for _, route in routes(system.apps["ingest"]):
            if not isinstance(route, GuardedRoute) or route.credential != "signature":
                continue
            for channel, providers in PROVIDERS_BY_CHANNEL.items():
                for provider in providers:
                    url = f"/v1/inbound/{channel}/{provider}"
                    other = next(p for p in PROVIDERS if p != provider)
                    # No signature, another provider's, or a key with every scope: 401.
                    for headers in (
                        {},
                        {SIGNATURE_HEADER: sign(SECRETS[other], body)},
                        KEYS.auth("with-tickets-act"),
                    ):
                        reply = await client.post(url, content=body, headers=headers)
                        assert reply.status_code == 401, (url, headers)
                    signed = {SIGNATURE_HEADER: sign(SECRETS[provider], body)}
                    reply = await client.post(url, content=body, headers=signed)
                    assert reply.status_code not in (401, 403), url


# -- the router's refusals -----------------------------------------------------------


async def ticket_with(system: System, client: httpx.AsyncClient, agent: str) -> str:
    """A ticket assigned to `agent` (online, auto-accepting), through the API and Kafka."""
    ops = KEYS.auth("with-agents-admin")
    profile = {"name": agent, "languages": ["en"], "capacity": {"chat": 1}, "auto_accept": True}
    assert (await client.put(f"/v1/agents/{agent}", json=profile, headers=ops)).status_code == 202
    me = ISSUER.auth(agent, [TICKETS_ACT])
    online = await client.post(
        f"/v1/agents/{agent}/presence", json={"status": "online"}, headers=me
    )
    assert online.status_code == 202, online.text
    await publish_all(system.broker, [message_event(1, category="deposit")])

    async def stored() -> list[dict[str, Any]]:  # folded in the background
        return list(system.router_store.tickets.values())

    [ticket] = await await_until(stored, 10, "the ticket folded into the router's store")
    assert (ticket["state"], ticket["agent_id"]) == ("assigned", agent)
    return str(ticket["_id"])


async def test_a_token_for_alice_cannot_act_as_mallory(system: System) -> None:
    async with system.client("router") as client:
        tid = await ticket_with(system, client, "alice")
        alice = ISSUER.auth("alice", [TICKETS_ACT])
        mallory = ISSUER.auth("mallory", [TICKETS_ACT])

        # Alice's token naming mallory, mallory's naming alice: 403, nothing published.
        as_mallory = await client.post(
            f"/v1/tickets/{tid}/resolve", json={"agent_id": "mallory"}, headers=alice
        )
        assert as_mallory.status_code == 403
        assert "cannot act as mallory" in as_mallory.json()["error"]
        as_alice = await client.post(
            f"/v1/tickets/{tid}/resolve", json={"agent_id": "alice"}, headers=mallory
        )
        assert as_alice.status_code == 403
        # Mallory as herself on alice's ticket: refused with the reason.
        own = await client.post(
            f"/v1/tickets/{tid}/resolve", json={"agent_id": "mallory"}, headers=mallory
        )
        assert (own.status_code, own.json()["error"]) == (
            409,
            "not the assignee: the ticket is with another agent",
        )
        assert system.router_store.tickets[tid]["state"] == "assigned"

        # Alice resolves her own ticket: accepted by the engine, visible by its event id.
        once = {**alice, "Idempotency-Key": "resolve-1"}
        done = await client.post(
            f"/v1/tickets/{tid}/resolve", json={"agent_id": "alice"}, headers=once
        )
        assert done.status_code == 202, done.text
        status = await client.get(done.json()["status_url"], headers=KEYS.auth("with-tickets-read"))
        assert status.json()["status"] == "accepted"
        ticket = await client.get(f"/v1/tickets/{tid}", headers=KEYS.auth("with-tickets-read"))
        assert ticket.json()["state"] == "resolved"
        # Again: the ticket is resolved.
        again = await client.post(
            f"/v1/tickets/{tid}/resolve", json={"agent_id": "alice"}, headers=alice
        )
        assert (again.status_code, again.json()["error"]) == (409, "ticket already resolved")
        # A retry of the same call (its Idempotency-Key) is told what became of it.
        retried = await client.post(
            f"/v1/tickets/{tid}/resolve", json={"agent_id": "alice"}, headers=once
        )
        assert (retried.status_code, retried.json()["status"]) == (200, "accepted")
        assert retried.json()["event_id"] == done.json()["event_id"]
        unknown = await client.post(
            "/v1/tickets/tkt_nope/resolve", json={"agent_id": "alice"}, headers=alice
        )
        assert unknown.status_code == 404
    forbidden = system.registries["router"].get_sample_value(
        "omniroute_router_api_requests_total",
        {"route": "POST /v1/tickets/{ticket_id}/{action}", "outcome": "forbidden"},
    )
    assert forbidden == 2


async def test_a_resolve_of_someone_elses_ticket_is_visible_as_rejected() -> None:
    system = build(KEYS)
    seen = captured(system.broker, TICKETS)

    desk = KEYS.auth("with-tickets-act")  # tickets:act + tickets:act-as
    reader = KEYS.auth("with-tickets-read")
    async with system.running(), system.client("router") as client:
        tid = await ticket_with(system, client, "alice")

        # A desk backend (a service key that may act for anyone) names mallory: what the
        # stored ticket shows is refused at once, with the reason.
        refused = await client.post(
            f"/v1/tickets/{tid}/resolve", json={"agent_id": "mallory"}, headers=desk
        )
        assert refused.status_code == 409
        assert refused.json()["error"].startswith("not the assignee")

        # A desk tool publishing straight to support.agents gets past the API: the engine
        # rejects it, on the ticket's log and at GET /v1/actions/{event_id}.
        foreign = AgentActionTaken(agent_id="mallory", ticket_id=tid, action="resolve", at=T0)
        await publish_all(
            system.broker,
            [
                make_event(
                    foreign,
                    topic=AGENTS,
                    event_type=AGENT_ACTION_TAKEN,
                    event_id="evt-mallory-1",
                    source="desk",
                    key="mallory",
                    time=T0,
                )
            ],
        )
        outcome = (await client.get("/v1/actions/evt-mallory-1", headers=reader)).json()
        assert outcome["status"] == "rejected"
        assert outcome["reason"] == "not the assignee: the ticket is with another agent"
        assert (outcome["agent_id"], outcome["action"]) == ("mallory", "resolve")
        assert (await client.get("/v1/actions/evt-unknown", headers=reader)).status_code == 404

    rejected = [e for e in seen if e["event"] == "action_rejected"]
    assert len(rejected) == 1
    # The ticket stays alice's (the SLA timers and notify follow `agent_id`); the reason
    # names who was refused.
    assert rejected[0]["agent_id"] == "alice"
    assert rejected[0]["state"] == "assigned"
    assert "resolve by mallory rejected" in rejected[0]["reasons"][0]
    assert system.router_store.tickets[tid]["state"] == "assigned"


# -- keys: rotation, limits, audit ------------------------------------------------------


async def test_rotation_with_two_keys_per_client() -> None:
    keys = Keys()
    old = keys.add("desk-2026a", ["tickets:read"], client="desk")
    new = keys.add("desk-2026b", ["tickets:read"], client="desk")
    # Both configured: clients switch to the new key whenever they like.
    overlap = build(keys)
    async with overlap.client("router") as client:
        for headers in (old, new, old):
            assert (await client.get("/v1/tickets", headers=headers)).status_code == 200
    # The old one removed (the next rollout): refused; the new one goes on.
    del keys.entries["desk-2026a"]
    after = build(keys)
    async with after.client("router") as client:
        assert (await client.get("/v1/tickets", headers=old)).status_code == 401
        assert (await client.get("/v1/tickets", headers=new)).status_code == 200


async def test_over_the_rate_a_key_gets_429_with_retry_after() -> None:
    keys = Keys()
    slow = keys.add("adapter-x", ["tickets:read"], rate_per_s=0.5, burst=2)
    fast = keys.add("desk-y", ["tickets:read"])
    running = build(keys)
    async with running.client("router") as client:
        codes = [(await client.get("/v1/tickets", headers=slow)).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        limited = await client.get("/v1/tickets", headers=slow)
        assert limited.status_code == 429
        assert int(limited.headers["Retry-After"]) >= 1
        # Another key is not starved by the first.
        assert (await client.get("/v1/tickets", headers=fast)).status_code == 200


async def test_webhooks_are_limited_per_provider_only_once_signed() -> None:
    running = build(Keys(), webhook_rate_per_s=0.1, webhook_rate_burst=2)
    body = chat_message("s1", "m1", "my deposit has not arrived")
    url = "/v1/inbound/chat/generic"
    async with running.running(), running.client("ingest") as client:
        # Unsigned floods spend nothing of the provider's bucket.
        for _ in range(5):
            assert (await client.post(url, content=body)).status_code == 401
        signed = {SIGNATURE_HEADER: sign(SECRETS["generic"], body)}
        codes = [(await client.post(url, content=body, headers=signed)).status_code for _ in "abc"]
        assert codes == [202, 202, 429]
        last = await client.post(url, content=body, headers=signed)
        assert int(last.headers["Retry-After"]) >= 1


async def test_audit_records_name_ids_never_personal_data() -> None:
    keys = Keys()
    ops = keys.add("crm-sync", ["customers:write"])
    running = build(keys)
    customer = {
        "identities": [{"kind": "email", "value": "li.wei@example.com"}],
        "tier": "vip2",
        "anti_phishing_code": "PHISH-CODE-77",
    }
    body = chat_message(
        "s9",
        "m9",
        "Li Wei here: my deposit has not arrived, my phone is +86 138 0013 8000",
        email="li.wei@example.com",
    )
    async with running.running(), running.client("ingest") as client:
        put = await client.put("/v1/customers/cus_liwei", json=customer, headers=ops)
        assert put.status_code == 200, put.text
        hook = await client.post(
            "/v1/inbound/chat/generic",
            content=body,
            headers={SIGNATURE_HEADER: sign(SECRETS["generic"], body)},
        )
        assert hook.status_code == 202, hook.text
    [route] = [r for _, r in routes(running.apps["ingest"]) if isinstance(r, GuardedRoute)][:1]
    entries = audit_of(route).entries
    assert [(e["route"], e["caller"], e["outcome"]) for e in entries] == [
        ("PUT /v1/customers/{customer_id}", "key:crm-sync", "ok"),
        ("POST /v1/inbound/{channel}/{provider}", "webhook:generic", "ok"),
    ]
    assert set(entries[0]["targets"]) == {"customer_ref"}
    assert entries[1]["targets"]["message_ids"] == hook.json()["message_ids"]
    dumped = json.dumps(entries, default=str)
    for personal in ("cus_liwei", "li.wei", "Li Wei", "PHISH", "138 0013", "deposit", "vip2"):
        assert personal not in dumped
