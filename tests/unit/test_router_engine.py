"""The routing engine as pure logic: state + input + now -> ticket events."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.router.engine import RouterState
from services.router.priority import RoutingPolicy, load_policy, prioritize
from shared.contracts.agents import (
    AgentActionTaken,
    AgentPresenceChanged,
    AgentProfile,
    AgentProfileUpdated,
)
from shared.settings import REPO_POLICY_DIR
from tests.support.factories import T0, message


@pytest.fixture
def policy() -> RoutingPolicy:
    return load_policy(REPO_POLICY_DIR / "routing.yaml")


def agent(state: RouterState, aid: str, *, auto: bool = True, chat: int = 1, **kw: object) -> None:
    profile = AgentProfile.model_validate(
        {"name": aid, "capacity": {"chat": chat, "email": 2}, "auto_accept": auto, **kw}
    )
    state.on_profile(AgentProfileUpdated(agent_id=aid, profile=profile, at=T0), f"p-{aid}", T0)
    state.on_presence(AgentPresenceChanged(agent_id=aid, status="online", at=T0), f"o-{aid}", T0)


def test_priorities_follow_the_policy(policy: RoutingPolicy) -> None:
    assert prioritize("stolen_funds", "standard", policy)[0] == "P1"
    assert prioritize("secret_exposed", "standard", policy)[0] == "P1"
    assert prioritize("deposit", "standard", policy)[0] == "P2"
    assert prioritize("kyc", "standard", policy)[0] == "P3"
    priority, reasons = prioritize("general", "vip3", policy)
    assert priority == "P4"
    assert any("vip3" in r for r in reasons)


def test_policy_must_place_every_category_once() -> None:
    with pytest.raises(ValueError, match="missing"):
        RoutingPolicy.model_validate({"priorities": {"P1": ["stolen_funds"]}})


def test_first_message_opens_and_assigns_to_the_online_agent(policy: RoutingPolicy) -> None:
    state = RouterState(policy)
    agent(state, "a1")
    ch = state.on_message(message(1, category="stolen_funds"), T0)
    assert [e.event for e in ch.events] == ["opened", "assigned"]
    assigned = ch.events[-1]
    assert assigned.agent_id == "a1"
    assert assigned.priority == "P1"
    assert [e.sequence for e in ch.events] == [1, 2]
    assert state.agents["a1"].load["chat"] == 1
    ticket = state.tickets[assigned.ticket_id]
    assert ticket.decision["chosen"] == "a1"
    assert ticket.decision["candidates"] == [{"agent_id": "a1", "verdict": "eligible"}]


def test_redelivered_message_changes_nothing(policy: RoutingPolicy) -> None:
    state = RouterState(policy)
    agent(state, "a1", chat=3)
    first = state.on_message(message(1), T0)
    again = state.on_message(message(1), T0 + timedelta(seconds=1))
    assert first.events and not again.events
    assert len(state.tickets) == 1
    assert state.agents["a1"].load["chat"] == 1


def test_no_capacity_queues_and_resolve_drains_best_first(policy: RoutingPolicy) -> None:
    state = RouterState(policy)
    agent(state, "a1", chat=1)
    first = state.on_message(message(1, category="general"), T0)
    low = state.on_message(message(2, category="trading"), T0 + timedelta(seconds=1))
    high = state.on_message(message(3, category="stolen_funds"), T0 + timedelta(seconds=2))
    assert [e.event for e in low.events] == ["opened", "queued"]
    assert [e.event for e in high.events] == ["opened", "queued"]
    tid = first.events[0].ticket_id
    done = state.on_action(
        AgentActionTaken(agent_id="a1", ticket_id=tid, action="resolve", at=T0), "r1", T0
    )
    # The P1 that arrived later is served before the older P4.
    assert [(e.event, e.priority) for e in done.events] == [("resolved", "P4"), ("assigned", "P1")]
    assert state.agents["a1"].load["chat"] == 1


def test_agent_never_exceeds_capacity(policy: RoutingPolicy) -> None:
    state = RouterState(policy)
    agent(state, "a1", chat=2)
    for n in range(10):
        state.on_message(message(n), T0 + timedelta(seconds=n))
        assert state.agents["a1"].load["chat"] <= 2
    assert sum(t.state == "queued" for t in state.tickets.values()) == 8


def test_skills_and_languages_decide_eligibility(policy: RoutingPolicy) -> None:
    state = RouterState(policy)
    agent(state, "en-only", languages=["en"])
    agent(state, "zh", languages=["zh"])
    ch = state.on_message(message(1, language="zh"), T0)
    assert ch.events[-1].agent_id == "zh"
    verdicts = {
        c["agent_id"]: c["verdict"]
        for c in state.tickets[ch.events[0].ticket_id].decision["candidates"]
    }
    assert verdicts == {"en-only": "no language zh", "zh": "eligible"}


def test_offer_then_accept_then_wait_then_customer_reply(policy: RoutingPolicy) -> None:
    state = RouterState(policy)
    agent(state, "a1", auto=False)
    ch = state.on_message(message(1), T0)
    tid = ch.events[0].ticket_id
    assert ch.events[-1].event == "offered"

    def act(action: str, n: str) -> list[str]:
        ev = AgentActionTaken(agent_id="a1", ticket_id=tid, action=action, at=T0)  # type: ignore[arg-type]
        return [e.event for e in state.on_action(ev, n, T0).events]

    assert act("accept", "x1") == ["accepted"]
    assert act("wait", "x2") == ["waiting_on_customer"]
    reply = state.on_message(message(2, conversation_id="cnv_1"), T0)
    assert [e.event for e in reply.events] == ["customer_replied"]
    assert state.tickets[tid].state == "assigned"


def test_going_offline_reroutes_outstanding_offers(policy: RoutingPolicy) -> None:
    state = RouterState(policy)
    agent(state, "a1", auto=False)
    ch = state.on_message(message(1), T0)
    tid = ch.events[0].ticket_id
    agent(state, "a2", auto=False)
    off = state.on_presence(AgentPresenceChanged(agent_id="a1", status="away", at=T0), "away", T0)
    assert [e.event for e in off.events] == ["offer_expired", "offered"]
    assert state.tickets[tid].agent_id == "a2"
    assert state.agents["a1"].load.get("chat", 0) == 0


def test_message_after_resolve_reopens_within_window(policy: RoutingPolicy) -> None:
    state = RouterState(policy)
    agent(state, "a1", chat=3)
    ch = state.on_message(message(1), T0)
    tid = ch.events[0].ticket_id
    state.on_action(
        AgentActionTaken(agent_id="a1", ticket_id=tid, action="resolve", at=T0), "r", T0
    )
    later = state.on_message(message(2, conversation_id="cnv_1"), T0 + timedelta(hours=1))
    assert [e.event for e in later.events][:1] == ["reopened"]
    assert later.events[0].ticket_id == tid
    much_later = T0 + timedelta(days=30)
    state.on_action(
        AgentActionTaken(agent_id="a1", ticket_id=tid, action="resolve", at=T0), "r2", T0
    )
    state.tickets[tid].resolved_at = T0
    fresh = state.on_message(message(3, conversation_id="cnv_1"), much_later)
    assert fresh.events[0].event == "opened"
    assert fresh.events[0].ticket_id != tid


def test_a_batch_is_routed_best_first_whatever_its_arrival_order(policy: RoutingPolicy) -> None:
    state = RouterState(policy)
    agent(state, "a1", chat=1)
    # Records of one batch come partition by partition: the P4 may come before the P1.
    low = state.on_message(message(1, category="trading"), T0, defer=True)
    high = state.on_message(message(2, category="stolen_funds"), T0, defer=True)
    assert [e.event for e in low.events + high.events] == ["opened", "opened"]
    routed = state.route_deferred(T0)
    assert [(e.event, e.priority) for e in routed.events] == [("assigned", "P1"), ("queued", "P4")]
    assert state.route_deferred(T0).events == []
