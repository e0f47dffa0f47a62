"""What access control stores, on real SecantusDB: audit records, action outcomes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from services.router.actions import ActionOutcome
from services.router.priority import load_policy
from services.router.state import RouterState
from services.router.store import MongoRouterStore, changes_of
from shared.audit import AuditEntry, MongoAuditLog
from shared.settings import REPO_POLICY_DIR
from tests.support.factories import T0

pytestmark = pytest.mark.integration


async def test_audit_records_are_appended_and_found_by_event_id(router_db: Any) -> None:
    audit = MongoAuditLog(router_db, retention_days=30)
    entry = AuditEntry(
        at=T0,
        service="router",
        caller="jwt:alice",
        client="oidc",
        route="POST /v1/tickets/{ticket_id}/{action}",
        outcome="ok",
        status=202,
        targets={"ticket_id": "tkt_1", "action": "resolve", "event_id": "evt_1"},
    )
    await audit.record(entry)
    await audit.record(AuditEntry(**{**entry.__dict__, "status": 409, "outcome": "refused"}))
    found = await audit.find_event("router", "evt_1")
    assert found is not None and found["caller"] == "jwt:alice"
    assert await audit.find_event("notify", "evt_1") is None
    assert await router_db.api_audit.count_documents({}) == 2
    # Expired after the retention; looked up by event id through an index.
    indexes = {tuple(i["key"]): i for i in (await router_db.api_audit.index_information()).values()}
    ttl = indexes.get((("at", 1),), {})
    assert ttl.get("expireAfterSeconds") == 30 * 86_400
    assert (("targets.event_id", 1),) in indexes


async def test_action_outcomes_are_kept_with_the_applied_events(router_db: Any) -> None:
    store = MongoRouterStore(router_db)
    await store.ensure_indexes()
    outcome = ActionOutcome("rejected", "tkt_1", "mallory", "resolve", T0, "not the assignee")
    await store.fold(changes_of([], [], ["evt_1", "evt_profile"], {"evt_1": outcome}))
    action = await store.get_action("evt_1")
    assert action is not None
    assert (action["status"], action["reason"]) == ("rejected", "not the assignee")
    assert await store.get_action("evt_profile") is None  # applied, but not an action
    # A restart still knows both as applied (redeliveries are skipped).
    state = RouterState(load_policy(REPO_POLICY_DIR / "routing.yaml"))
    await store.load(state, T0 - timedelta(days=1))
    assert state.applied_agent_events == {"evt_1", "evt_profile"}
