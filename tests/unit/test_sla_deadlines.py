"""SLA timers as pure logic."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.sla.deadlines import SlaPolicy, SlaState, load_policy
from shared.settings import REPO_POLICY_DIR
from tests.support.factories import T0, ticket_event


@pytest.fixture
def policy() -> SlaPolicy:
    return load_policy(REPO_POLICY_DIR / "sla.yaml")


def test_opened_starts_first_response_and_resolution(policy: SlaPolicy) -> None:
    state = SlaState(policy)
    out, changed = state.on_ticket(ticket_event("opened", 1, priority="P1"), T0)
    assert sorted(e.metric for e in out) == ["first_response", "resolution"]
    first = next(e for e in out if e.metric == "first_response")
    # chat P1 first response: 60 s in the shipped policy
    assert first.due_at == T0 + timedelta(seconds=60)
    assert len(changed) == 2


def test_warning_then_breach_once_each(policy: SlaPolicy) -> None:
    state = SlaState(policy)
    state.on_ticket(ticket_event("opened", 1, priority="P1"), T0)
    assert state.fire_due(T0 + timedelta(seconds=44))[0] == []
    warn, _ = state.fire_due(T0 + timedelta(seconds=45))
    assert [(e.event, e.metric) for e in warn] == [("warning", "first_response")]
    breach, _ = state.fire_due(T0 + timedelta(seconds=61))
    assert [(e.event, e.metric) for e in breach] == [("breached", "first_response")]
    assert state.fire_due(T0 + timedelta(seconds=120))[0] == []


def test_reply_before_due_is_met_and_never_breaches(policy: SlaPolicy) -> None:
    state = SlaState(policy)
    state.on_ticket(ticket_event("opened", 1, priority="P1"), T0)
    out, _ = state.on_ticket(
        ticket_event("agent_replied", 2, priority="P1"), T0 + timedelta(seconds=20)
    )
    assert [(e.event, e.metric) for e in out] == [("met", "first_response")]
    fired, _ = state.fire_due(T0 + timedelta(seconds=3600))
    assert all(e.metric != "first_response" for e in fired)


def test_pause_moves_deadline_by_exactly_the_paused_time(policy: SlaPolicy) -> None:
    state = SlaState(policy)
    state.on_ticket(ticket_event("opened", 1, priority="P1"), T0)
    state.on_ticket(
        ticket_event("waiting_on_customer", 2, priority="P1", at=T0 + timedelta(seconds=10)), T0
    )
    # While paused nothing fires, however late it gets.
    assert state.fire_due(T0 + timedelta(seconds=500))[0] == []
    resumed_at = T0 + timedelta(seconds=310)
    state.on_ticket(ticket_event("customer_replied", 3, priority="P1", at=resumed_at), resumed_at)
    timer = next(t for t in state.timers.values() if t.metric == "first_response")
    assert timer.due_at == T0 + timedelta(seconds=60 + 300)


def test_redelivered_ticket_event_is_skipped(policy: SlaPolicy) -> None:
    state = SlaState(policy)
    state.on_ticket(ticket_event("opened", 1), T0)
    again, changed = state.on_ticket(ticket_event("opened", 1), T0)
    assert again == [] and changed == set()
    assert len(state.timers) == 2
