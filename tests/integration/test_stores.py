"""The MongoDB stores on real SecantusDB: state survives a restart, identities link."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from pymongo.errors import DuplicateKeyError

from services.ingest.customers import CustomerRecord
from services.ingest.store import MongoCustomerStore
from services.router.priority import load_policy as routing_policy
from services.router.state import RouterState
from services.router.store import MongoRouterStore, changes_of
from services.sla.deadlines import SlaState
from services.sla.deadlines import load_policy as sla_policy
from services.sla.store import TIMERS, MongoSlaStore, journaled
from shared.contracts.agents import AgentPresenceChanged, AgentProfile, AgentProfileUpdated
from shared.contracts.messages import Identity
from shared.settings import REPO_POLICY_DIR
from tests.support.factories import T0, message
from tests.support.factories import ticket_event as make_ticket_event

pytestmark = pytest.mark.integration


async def test_router_state_survives_a_restart(router_db: Any) -> None:
    store = MongoRouterStore(router_db)
    await store.ensure_indexes()
    policy = routing_policy(REPO_POLICY_DIR / "routing.yaml")
    state = RouterState(policy)
    profile = AgentProfile(name="A", capacity={"chat": 1}, auto_accept=True)
    changes = state.on_profile(AgentProfileUpdated(agent_id="a1", profile=profile, at=T0), "p", T0)
    changes.merge(
        state.on_presence(AgentPresenceChanged(agent_id="a1", status="online", at=T0), "o", T0)
    )
    changes.merge(state.on_message(message(1, category="stolen_funds"), T0))
    changes.merge(state.on_message(message(2), T0))
    await store.fold(changes_of(changes.tickets.values(), changes.agents.values(), ["p", "o"]))

    # A new process: state comes back from MongoDB.
    restarted = RouterState(policy)
    await store.load(restarted, T0 - timedelta(days=1))
    assert restarted.agents["a1"].load == {"chat": 1}
    assert {t.state for t in restarted.tickets.values()} == {"assigned", "queued"}
    assert restarted.applied_agent_events == {"p", "o"}
    # Redelivered input is recognised as applied.
    assert restarted.on_message(message(1, category="stolen_funds"), T0).events == []


async def test_sla_timers_survive_a_restart(sla_db: Any) -> None:
    store = MongoSlaStore(sla_db)
    policy = sla_policy(REPO_POLICY_DIR / "sla.yaml")
    state = SlaState(policy)
    _, changed = state.on_ticket(make_ticket_event("opened", 1, priority="P1"), T0)
    await store.fold({TIMERS: [journaled(state.timers[i], 1) for i in changed]})
    restarted = SlaState(policy)
    await store.load(restarted)
    assert {t.metric for t in restarted.timers.values()} == {"first_response", "resolution"}
    assert restarted.on_ticket(make_ticket_event("opened", 1, priority="P1"), T0) == ([], set())
    fired, _ = restarted.fire_due(T0 + timedelta(seconds=61))
    assert [(e.event, e.metric) for e in fired] == [
        ("warning", "first_response"),
        ("breached", "first_response"),
    ]


async def test_identities_seen_together_are_one_customer(ingest_db: Any) -> None:
    store = MongoCustomerStore(ingest_db)
    await store.ensure_indexes()
    visitor = Identity(kind="chat_visitor", value="v-9")
    email = Identity(kind="email", value="mei@example.com")
    [first] = await store.resolve_many([(visitor,)], T0)
    [linked] = await store.resolve_many([(visitor, email)], T0)
    [by_email] = await store.resolve_many([(email,)], T0)
    assert first.new and not linked.new
    assert first.customer_id == linked.customer_id == by_email.customer_id
    assert await ingest_db["customers"].count_documents({}) == 1
    # Created at version 1 (announced on support.customers); a PUT restates it at 2.
    assert first.version == linked.version == 1
    [restated] = await store.upsert_many(
        [CustomerRecord(first.customer_id, (email,), "vip1", "CODE-42", "zh")]
    )
    assert (restated.version, restated.tier, restated.anti_phishing_code) == (2, "vip1", "CODE-42")
    [after] = await store.resolve_many([(visitor,)], T0)
    assert (after.version, after.language, after.new) == (2, "zh", False)


async def test_two_replicas_resolving_one_new_sender_agree(ingest_db: Any) -> None:
    store_a, store_b = MongoCustomerStore(ingest_db), MongoCustomerStore(ingest_db)
    await store_a.ensure_indexes()
    who = (Identity(kind="telegram", value="42"),)
    a, b = await asyncio.gather(store_a.resolve_many([who], T0), store_b.resolve_many([who], T0))
    assert a[0].customer_id == b[0].customer_id
    assert await ingest_db["customers"].count_documents({}) == 1


async def test_customers_stored_before_identity_keys_are_found_and_still_unique(
    ingest_db: Any,
) -> None:
    # The layout of an earlier release: identities only, under the old compound index.
    await ingest_db["customers"].create_index(
        [("identities.kind", 1), ("identities.value", 1)], unique=True, name="identity_unique"
    )
    await ingest_db["customers"].insert_one(
        {"_id": "cus_old", "identities": [{"kind": "email", "value": "old@example.com"}]}
    )
    store = MongoCustomerStore(ingest_db)
    await store.ensure_indexes()
    indexes = await ingest_db["customers"].index_information()
    assert "identity_unique" not in indexes and indexes["identity_key_unique"]["unique"]
    [ref] = await store.resolve_many([(Identity(kind="email", value="old@example.com"),)], T0)
    assert ref.customer_id == "cus_old" and not ref.new
    # The key index now enforces one owner per identity.
    with pytest.raises(DuplicateKeyError):
        await ingest_db["customers"].insert_one(
            {"_id": "cus_x", "identity_keys": ["email:old@example.com"]}
        )
