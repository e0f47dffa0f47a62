"""Agent actions a ticket does not take: refused by one rule, at the API and in the engine,
and the `action_rejected` event they leave changes nothing downstream."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.notify.decide import on_ticket_event
from services.router.actions import refusal
from services.router.audit import Auditor
from services.router.priority import RoutingPolicy, load_policy
from services.router.state import RouterState
from services.sla.deadlines import SlaState
from services.sla.deadlines import load_policy as load_sla_policy
from shared.contracts.agents import AgentActionTaken
from shared.contracts.tickets import TicketEvent
from shared.settings import REPO_POLICY_DIR
from tests.support.factories import T0, agent, message, ticket_event

NOT_ASSIGNEE = "not the assignee: the ticket is with another agent"


@pytest.fixture
def policy() -> RoutingPolicy:
    return load_policy(REPO_POLICY_DIR / "routing.yaml")


@pytest.mark.parametrize(
    ("state", "holder", "action", "actor", "expected"),
    [
        (None, None, "resolve", "alice", ("not_found", "ticket not found")),
        ("resolved", "alice", "resolve", "alice", ("conflict", "ticket already resolved")),
        ("queued", None, "accept", "alice", ("conflict", "ticket is waiting in the queue")),
        ("assigned", "alice", "resolve", "mallory", ("conflict", NOT_ASSIGNEE)),
        ("offered", "alice", "accept", "mallory", ("conflict", NOT_ASSIGNEE)),
        ("assigned", "alice", "decline", "alice", ("conflict", "accepted work cannot")),
        ("offered", "alice", "decline", "alice", None),
        ("assigned", "alice", "accept", "alice", None),  # a desk tool's retry
        ("waiting_on_customer", "alice", "wait", "alice", None),
        ("waiting_on_customer", "alice", "resolve", "alice", None),
        ("resolved", "alice", "recategorize", "bob", None),  # corrections come late too
        (None, None, "recategorize", "bob", ("not_found", "ticket not found")),
    ],
)
def test_one_rule_says_which_actions_a_ticket_takes(
    state: str | None,
    holder: str | None,
    action: str,
    actor: str,
    expected: tuple[str, str] | None,
) -> None:
    found = refusal(state, holder, action, actor)
    if expected is None:
        assert found is None
    else:
        assert found is not None
        assert (found.kind, found.reason[: len(expected[1])]) == expected


def resolve(aid: str, tid: str) -> AgentActionTaken:
    return AgentActionTaken(agent_id=aid, ticket_id=tid, action="resolve", at=T0)


def test_the_engine_rejects_with_an_event_and_an_outcome(policy: RoutingPolicy) -> None:
    state = RouterState(policy)
    agent(state, "alice")
    agent(state, "mallory")
    [opened, assigned] = state.on_message(message(1, category="deposit"), T0).events
    tid, holder = opened.ticket_id, assigned.agent_id
    other = "mallory" if holder == "alice" else "alice"
    later = T0 + timedelta(seconds=5)

    # Someone else's resolve: nothing changes but the log and the outcome.
    ch = state.on_action(resolve(other, tid), "e1", later)
    [rejected] = ch.events
    assert rejected.event == "action_rejected"
    assert rejected.agent_id == holder  # still the holder's: SLA and notify follow it
    assert rejected.state == "assigned"
    assert rejected.reasons == (f"resolve by {other} rejected: {NOT_ASSIGNEE}",)
    assert ch.outcomes["e1"].status == "rejected"
    assert state.tickets[tid].state == "assigned"
    assert state.agents[holder].load == {"chat": 1}

    # The holder's resolve is accepted; a second one is rejected as already resolved.
    ok = state.on_action(resolve(holder, tid), "e2", later)
    assert [e.event for e in ok.events] == ["resolved"]
    assert ok.outcomes["e2"].status == "accepted"
    again = state.on_action(resolve(holder, tid), "e3", later)
    assert [e.event for e in again.events] == ["action_rejected"]
    assert again.outcomes["e3"].reason == "ticket already resolved"
    # Redelivered: applied once, nothing new.
    assert not state.on_action(resolve(other, tid), "e1", later)

    # No such ticket: no log to tell it on, the outcome alone says it.
    lost = state.on_action(resolve(holder, "tkt_nope"), "e4", later)
    assert lost.events == []
    assert lost.outcomes["e4"].reason == "ticket not found"

    # The replayed log breaks no rule: a rejection is an annotation, even after resolve.
    auditor = Auditor(policy)
    for aid in ("alice", "mallory"):
        auditor.set_agent(aid, state.agents[aid].profile, "online")
    log = [opened, assigned, rejected, *ok.events, *again.events]
    assert auditor.apply_all(log) == []


def test_sla_and_notify_ignore_a_rejection() -> None:
    rejected: TicketEvent = ticket_event(
        "action_rejected",
        3,
        state="assigned",
        agent_id="alice",
        reasons=("resolve by mallory rejected: not the assignee",),
    )
    sla = SlaState(load_sla_policy(REPO_POLICY_DIR / "sla.yaml"))
    sla.on_ticket(ticket_event("opened", 1), T0)
    sla.on_ticket(ticket_event("assigned", 2, state="assigned", agent_id="alice"), T0)
    timers = {t.timer_id: (t.state, t.agent_id) for t in sla.timers.values()}
    assert sla.on_ticket(rejected, T0 + timedelta(seconds=1)) == ([], set())
    assert {t.timer_id: (t.state, t.agent_id) for t in sla.timers.values()} == timers

    view, _ = on_ticket_event(None, ticket_event("opened", 1), "ce-1")
    view, told = on_ticket_event(view, rejected, "ce-3")
    assert told == []
    assert view.state == "assigned"
