"""Retention policy validation and the engines' erasure in memory: pure logic."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from services.ingest.erasure import erasure_view
from services.router.engine import RouterState
from services.router.erasure import ERASED, RouterErasure, erase_customer
from services.router.priority import load_policy as load_routing
from services.sla.deadlines import SlaState
from services.sla.deadlines import load_policy as load_sla
from services.sla.erasure import erase_customer as erase_timers
from shared.contracts.erasures import ErasureRequested, LegalHoldChanged
from shared.events import OutboundEvent
from shared.retention import RetentionPolicy, load_retention
from shared.settings import REPO_POLICY_DIR
from tests.support.factories import T0, agent, message, ticket_event

REQ = ErasureRequested(
    erasure_id="ers_1",
    customer_id="cus_a",
    reason="customer request",
    requested_by="key:dpo",
    at=T0,
)


def test_the_repository_policy_states_every_kind_of_record() -> None:
    policy = load_retention(REPO_POLICY_DIR / "retention.yaml")
    assert policy.keep.tickets == timedelta(days=1825)
    assert policy.keep.notifications == timedelta(days=90)
    assert policy.cutoff("message_text", T0) == T0 - timedelta(days=30)


def test_a_missing_kind_or_a_period_that_is_not_positive_stops_the_start(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO_POLICY_DIR / "retention.yaml").read_text())
    del data["keep"]["audit"]
    with pytest.raises(ValidationError, match="audit"):
        RetentionPolicy.model_validate(data)
    data["keep"]["audit"] = "PT0S"
    with pytest.raises(ValidationError, match="positive"):
        RetentionPolicy.model_validate(data)
    data["keep"]["audit"] = "P1D"
    data["keep"]["chat_logs"] = "P1D"  # a kind nobody enforces is a typo
    with pytest.raises(ValidationError, match="chat_logs"):
        RetentionPolicy.model_validate(data)


def test_router_erasure_leaves_anonymous_shells_and_a_new_message_opens_a_new_ticket() -> None:
    state = RouterState(load_routing(REPO_POLICY_DIR / "routing.yaml"))
    agent(state, "a1")
    first = state.on_message(message(1, customer_id="cus_a", category="stolen_funds"), T0)
    state.on_message(message(2, customer_id="cus_b"), T0)
    (tid,) = {e.ticket_id for e in first.events}
    shell = state.tickets[tid]

    changes = erase_customer(state, "cus_a")

    # The shell keeps what metrics need; no customer, no conversation links.
    assert set(changes.tickets) == {tid}
    assert (shell.customer_id, shell.conversation_ids) == (ERASED, [])
    assert (shell.category, shell.priority, shell.agent_id) == ("stolen_funds", "P1", "a1")
    assert "cus_a" not in state.cases and "cus_a" not in state.last_agent_by_customer
    assert all(t.customer_id != "cus_a" for t in state.tickets.values())
    assert [t.customer_id for t in state.tickets.values() if t.ticket_id != tid] == ["cus_b"]
    # Same conversation, same customer id again: a new ticket, not the shell.
    later = state.on_message(
        message(3, conversation_id="cnv_1", customer_id="cus_a", category="stolen_funds"), T0
    )
    opened = [e for e in later.events if e.event == "opened"]
    assert opened and opened[0].ticket_id != tid


async def test_router_erasure_is_applied_at_the_batch_end_and_skips_held_customers() -> None:
    state = RouterState(load_routing(REPO_POLICY_DIR / "routing.yaml"))
    state.on_message(message(1, customer_id="cus_a"), T0)
    state.on_message(message(2, customer_id="cus_h"), T0)
    erasure = RouterErasure()
    erasure.note(LegalHoldChanged(customer_id="cus_h", hold=True, version=1, at=T0))
    erasure.note(REQ)
    erasure.note(REQ.model_copy(update={"erasure_id": "ers_2", "customer_id": "cus_h"}))

    changes, done = await erasure.finish(state, T0)

    assert {t.customer_id for t in changes.tickets.values()} == {ERASED}
    assert sorted(t.customer_id for t in state.tickets.values()) == ["cus_h", ERASED]
    reports = [_data(e) for e in done]
    assert [(r["erasure_id"], r["held"], r["counts"]) for r in reports] == [
        ("ers_1", False, {"tickets": 1}),
        ("ers_2", True, {}),
    ]
    # Nothing is left for the next batch.
    assert (await erasure.finish(state, T0))[1] == []


def test_sla_erasure_anonymises_the_customers_timers_only() -> None:
    state = SlaState(load_sla(REPO_POLICY_DIR / "sla.yaml"))
    state.on_ticket(ticket_event("opened", ticket_id="tkt_a", customer_id="cus_a"), T0)
    state.on_ticket(ticket_event("opened", ticket_id="tkt_b", customer_id="cus_b"), T0)

    changed = erase_timers(state, "cus_a")

    assert changed and {t.ticket_id for t in changed} == {"tkt_a"}
    assert {t.customer_id for t in state.timers.values()} == {ERASED, "cus_b"}
    # Timer state (SLA history) is untouched.
    assert all(t.state == "running" and t.due_at > T0 for t in changed)


def test_the_erasure_view_shows_each_services_state() -> None:
    services: dict[str, Any] = {"ingest": {"counts": {"customers": 1}, "held": False, "at": T0}}
    doc = {
        "_id": "ers_1",
        "customer_ref": "ab12",
        "reason": "customer request",
        "requested_by": "key:dpo",
        "at": T0,
        "held": False,
        "services": services,
    }
    view = erasure_view(doc)
    assert view["state"] == "pending"
    assert view["services"]["ingest"] == {
        "state": "completed",
        "counts": {"customers": 1},
        "at": T0,
    }
    assert view["services"]["router"] == {"state": "pending"}
    for svc in ("router", "sla", "notify"):
        services[svc] = {"counts": {}, "held": False, "at": T0}
    assert erasure_view(doc)["state"] == "completed"
    held = erasure_view({**doc, "held": True, "services": {}})
    assert held["state"] == "held" and {s["state"] for s in held["services"].values()} == {"held"}


def _data(event: OutboundEvent) -> dict[str, object]:
    data: dict[str, object] = json.loads(event.value)
    return data
