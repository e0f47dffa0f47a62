"""The routing engine as pure logic: state + input + now -> ticket events."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from services.router.priority import RoutingPolicy, load_policy, prioritize
from services.router.state import RouterState
from services.router.state.model import Changes, Ticket
from services.router.store import ticket_doc, ticket_from_doc
from shared.contracts.agents import (
    AgentActionTaken,
    AgentPresenceChanged,
    AgentProfile,
    AgentProfileUpdated,
)
from shared.contracts.sla import SlaEvent
from shared.settings import REPO_POLICY_DIR
from tests.support.factories import T0, agent, message


@pytest.fixture
def policy() -> RoutingPolicy:
    return load_policy(REPO_POLICY_DIR / "routing.yaml")


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


# -- the matching engine ---------------------------------------------------------------


def act(state: RouterState, action: str, tid: str, aid: str, n: str, at: datetime) -> list[str]:
    ev = AgentActionTaken(agent_id=aid, ticket_id=tid, action=action, at=at)  # type: ignore[arg-type]
    return [e.event for e in state.on_action(ev, n, at).events]


def presence(state: RouterState, aid: str, status: str, at: datetime) -> Changes:
    ev = AgentPresenceChanged(agent_id=aid, status=status, at=at)  # type: ignore[arg-type]
    return state.on_presence(ev, f"{aid}-{status}-{at.isoformat()}", at)


def sla(t: Ticket, event: str, timer: str = "tmr_1", at: datetime = T0) -> SlaEvent:
    return SlaEvent(
        timer_id=timer,
        ticket_id=t.ticket_id,
        event=event,  # type: ignore[arg-type]
        metric="first_response",
        due_at=at,
        elapsed_s=60,
        target_s=60,
        priority=t.priority,
        channel=t.channel,
        customer_id=t.customer_id,
        at=at,
    )


def test_same_customer_stolen_funds_on_two_channels_is_one_case(policy: RoutingPolicy) -> None:
    state = RouterState(policy)
    agent(state, "a1", chat=3)
    first = state.on_message(message(1, category="stolen_funds", customer_id="c"), T0)
    tid = first.events[0].ticket_id
    later = T0 + timedelta(minutes=20)
    again = state.on_message(
        message(2, category="account_takeover", channel="email", customer_id="c"), later
    )
    # One ticket, both conversations linked, the reason says why.
    assert [(e.event, e.ticket_id) for e in again.events] == [("message_added", tid)]
    assert again.events[0].conversation_ids == ("cnv_1", "cnv_2")
    assert "one case, conversations linked" in again.events[0].reasons[0]
    assert "chat and email" in again.events[0].reasons[0]
    # A reply in the second conversation joins the same ticket.
    reply = state.on_message(message(3, conversation_id="cnv_2", customer_id="c"), later)
    assert reply.events[0].ticket_id == tid
    # Outside the window, another customer, or another subject: separate tickets.
    late = T0 + timedelta(minutes=20 + 61)
    apart = state.on_message(message(4, category="stolen_funds", customer_id="c"), late)
    other = state.on_message(message(5, category="stolen_funds", customer_id="d"), later)
    topic = state.on_message(message(6, category="withdrawal", customer_id="c"), later)
    assert {apart.events[0].event, other.events[0].event, topic.events[0].event} == {"opened"}


def test_a_resolved_case_reported_again_elsewhere_reopens(policy: RoutingPolicy) -> None:
    state = RouterState(policy)
    agent(state, "a1", chat=3)
    tid = state.on_message(message(1, category="stolen_funds", customer_id="c"), T0).events[0]
    act(state, "resolve", tid.ticket_id, "a1", "r", T0)
    ch = state.on_message(
        message(2, category="stolen_funds", channel="social", customer_id="c"), T0
    )
    assert [e.event for e in ch.events] == ["reopened", "assigned"]
    assert ch.events[0].conversation_ids == ("cnv_1", "cnv_2")


def test_an_unaccepted_offer_expires_on_the_clock_and_moves_on(policy: RoutingPolicy) -> None:
    state = RouterState(policy)
    agent(state, "a1", auto=False, chat=2)
    agent(state, "a2", auto=False, chat=2)
    ch = state.on_message(message(1), T0)
    offered = ch.events[-1]
    assert (offered.event, offered.agent_id) == ("offered", "a1")
    assert offered.offer_expires_at == T0 + timedelta(seconds=30)  # chat timeout
    assert state.next_due() == offered.offer_expires_at
    assert state.tick(T0 + timedelta(seconds=29)).events == []
    fired = state.tick(T0 + timedelta(seconds=30))
    # Not straight back to a1, though a1 is now the least loaded.
    assert [(e.event, e.agent_id) for e in fired.events] == [
        ("offer_expired", "a1"),
        ("offered", "a2"),
    ]
    assert fired.events[0].reasons == ("not accepted within 30s",)
    assert fired.expired == [("chat", "timeout")]
    # a2 lets it expire too: everyone passed, so it rotates back to the earliest passer.
    back = state.tick(T0 + timedelta(seconds=60))
    assert [(e.event, e.agent_id) for e in back.events] == [
        ("offer_expired", "a2"),
        ("offered", "a1"),
    ]
    # Accepted in time: the stale timer entry fires nothing.
    assert act(state, "accept", offered.ticket_id, "a1", "acc", T0) == ["accepted"]
    assert state.tick(T0 + timedelta(hours=1)).events == []
    assert state.tickets[offered.ticket_id].passed_by == []


def test_a_declined_offer_goes_to_the_next_agent(policy: RoutingPolicy) -> None:
    state = RouterState(policy)
    agent(state, "a1", auto=False)
    agent(state, "a2", auto=False)
    tid = state.on_message(message(1), T0).events[0].ticket_id
    ev = AgentActionTaken(agent_id="a1", ticket_id=tid, action="decline", at=T0)
    ch = state.on_action(ev, "d1", T0)
    assert [(e.event, e.agent_id) for e in ch.events] == [
        ("offer_expired", "a1"),
        ("offered", "a2"),
    ]
    assert ch.events[0].reasons == ("declined by a1",)


def test_freed_capacity_takes_the_best_waiting_ticket_it_may_take(policy: RoutingPolicy) -> None:
    state = RouterState(policy)
    agent(state, "a1", auto=False, chat=1)
    t1 = state.on_message(message(1, category="general"), T0).events[0].ticket_id
    low = state.on_message(message(2, category="trading"), T0)
    high = state.on_message(message(3, category="withdrawal", language="zh"), T0)
    assert low.events[-1].event == high.events[-1].event == "queued"
    # a1 declines: a1 may not take the zh P2, so the P4 is the best a1 may take.
    ev = AgentActionTaken(agent_id="a1", ticket_id=t1, action="decline", at=T0)
    ch = state.on_action(ev, "d", T0)
    assert [(e.event, e.priority) for e in ch.events] == [
        ("offer_expired", "P4"),
        ("offered", "P4"),
    ]
    assert ch.events[-1].ticket_id == low.events[0].ticket_id
    # A zh agent coming online drains the P2 at once.
    agent(state, "zh", languages=["zh"])
    assert state.tickets[high.events[0].ticket_id].agent_id == "zh"


def test_raising_capacity_drains_the_queue(policy: RoutingPolicy) -> None:
    state = RouterState(policy)
    agent(state, "a1", chat=1)
    for n in range(3):
        state.on_message(message(n), T0 + timedelta(seconds=n))
    assert [t.state for t in state.waiting()] == ["queued", "queued"]
    profile = AgentProfile.model_validate(
        {"name": "a1", "capacity": {"chat": 3}, "auto_accept": True}
    )
    ch = state.on_profile(AgentProfileUpdated(agent_id="a1", profile=profile, at=T0), "up", T0)
    assert [e.event for e in ch.events] == ["assigned", "assigned"]
    assert state.waiting() == []


def test_away_agent_work_is_requeued_after_grace_with_its_age(policy: RoutingPolicy) -> None:
    state = RouterState(policy)
    agent(state, "a1", chat=2)
    t1 = state.on_message(message(1), T0).events[0].ticket_id
    waited = state.tickets[t1].waiting_since
    away_at = T0 + timedelta(minutes=5)
    presence(state, "a1", "away", away_at)
    assert state.agents["a1"].requeue_due_at == away_at + timedelta(seconds=120)
    agent(state, "a2", chat=2)  # a2 registered and online meanwhile; t1 stays with a1
    assert state.tickets[t1].agent_id == "a1"
    assert state.tick(away_at + timedelta(seconds=119)).events == []
    ch = state.tick(away_at + timedelta(seconds=120))
    assert [(e.event, e.agent_id) for e in ch.events] == [("reassigned", "a1"), ("assigned", "a2")]
    assert "original age" in ch.events[0].reasons[0]
    assert state.tickets[t1].waiting_since == waited
    assert state.agents["a1"].load == {}


def test_coming_back_within_grace_keeps_the_work(policy: RoutingPolicy) -> None:
    state = RouterState(policy)
    agent(state, "a1", chat=2)
    agent(state, "a2", chat=2)
    t1 = state.on_message(message(1), T0).events[0].ticket_id
    holder = state.tickets[t1].agent_id
    presence(state, holder or "", "away", T0)
    presence(state, holder or "", "online", T0 + timedelta(seconds=60))
    assert state.tick(T0 + timedelta(hours=1)).events == []
    assert state.tickets[t1].agent_id == holder


def test_an_sla_warning_moves_a_ticket_ahead_within_its_step(policy: RoutingPolicy) -> None:
    state = RouterState(policy)
    first = state.on_message(message(1), T0).events[0].ticket_id
    second = state.on_message(message(2), T0 + timedelta(seconds=10)).events[0].ticket_id
    assert [t.ticket_id for t in state.waiting()] == [first, second]
    ch = state.on_sla(sla(state.tickets[second], "warning"), T0)
    assert ch.events == [] and second in ch.tickets  # stored, nothing to announce
    assert [t.ticket_id for t in state.waiting()] == [second, first]
    assert any("warning" in r for r in state.tickets[second].reasons)


def test_a_breach_escalates_and_moves_to_supervisors(policy: RoutingPolicy) -> None:
    state = RouterState(policy)
    agent(state, "a1", chat=2)
    tid = state.on_message(message(1, category="deposit"), T0).events[0].ticket_id
    t = state.tickets[tid]
    assert (t.priority, t.agent_id) == ("P2", "a1")
    # No supervisor free: raised to P1 and into the supervisor pool, but stays with a1.
    ch = state.on_sla(sla(t, "breached"), T0)
    assert [(e.event, e.priority, e.pool) for e in ch.events] == [("escalated", "P1", "supervisor")]
    assert ch.events[0].reasons == (
        "SLA first_response breached: P2 -> P1; moved to the supervisor pool",
    )
    assert t.agent_id == "a1" and "no supervisor free: stays with a1" in t.reasons
    # A redelivered breach changes nothing.
    assert state.on_sla(sla(t, "breached"), T0).events == []
    # The next breach, with a supervisor online: reassigned to the supervisor.
    agent(state, "boss", supervisor=True)
    ch = state.on_sla(sla(t, "breached", timer="tmr_2"), T0)
    assert [(e.event, e.agent_id) for e in ch.events] == [
        ("escalated", "a1"),
        ("reassigned", "a1"),
        ("assigned", "boss"),
    ]
    assert state.agents["a1"].load == {} and state.agents["boss"].load == {"chat": 1}


def test_a_waiting_escalated_ticket_goes_to_supervisors_only(policy: RoutingPolicy) -> None:
    state = RouterState(policy)
    tid = state.on_message(message(1, category="deposit"), T0).events[0].ticket_id
    state.on_sla(sla(state.tickets[tid], "breached"), T0)
    agent(state, "a1")
    assert state.tickets[tid].state == "queued"
    agent(state, "boss", supervisor=True)
    assert state.tickets[tid].agent_id == "boss"


def test_p1_takes_the_emergency_slot_when_everyone_is_full(policy: RoutingPolicy) -> None:
    state = RouterState(policy)
    agent(state, "sec", chat=1, security=True)
    state.on_message(message(1), T0)  # fills sec's chat
    p2 = state.on_message(message(2, category="withdrawal"), T0)
    assert p2.events[-1].event == "queued"  # no emergency slot below P1
    p1 = state.on_message(message(3, category="stolen_funds"), T0)
    assert (p1.events[-1].event, p1.events[-1].emergency) == ("assigned", True)
    assert state.agents["sec"].load == {"chat": 2}
    # The one slot is used: the next P1 waits.
    assert state.on_message(message(4, category="secret_exposed"), T0).events[-1].event == "queued"


def test_events_carry_a_gap_free_router_position(policy: RoutingPolicy) -> None:
    state = RouterState(policy)
    agent(state, "a1", chat=1, auto=False)
    events = state.on_message(message(1), T0).events + state.on_message(message(2), T0).events
    events += state.tick(T0 + timedelta(minutes=5)).events
    assert [e.position for e in events] == list(range(1, len(events) + 1))


def test_counts_follow_every_change_without_a_scan(policy: RoutingPolicy) -> None:
    state = RouterState(policy)
    agent(state, "a1", chat=1)
    state.on_message(message(1, category="deposit"), T0)
    state.on_message(message(2, category="kyc"), T0)
    assert +state.counts == {("assigned", "P2"): 1, ("queued", "P3"): 1}
    assert state.queue.depth["P3"] == 1
    assert state.queue.oldest_since("P3") == T0.timestamp()


def test_decision_record_answers_why_her(policy: RoutingPolicy) -> None:
    state = RouterState(policy)
    agent(state, "busy", chat=2)
    state.on_message(message(1, customer_id="x"), T0)
    agent(state, "zh", languages=["zh"])
    agent(state, "idle", chat=2)
    tid = state.on_message(message(2, category="stolen_funds"), T0).events[0].ticket_id
    d = state.tickets[tid].decision
    assert d["priority"] == "P1"
    assert d["priority_reasons"][0] == "category stolen_funds -> P1"
    assert d["chosen"] == "idle" and d["why"] == "least loaded, then longest idle"
    assert {c["agent_id"]: c["verdict"] for c in d["candidates"]}["zh"] == "no language en"


def test_a_big_team_is_summarised_in_the_decision_record(policy: RoutingPolicy) -> None:
    state = RouterState(policy)
    for n in range(30):
        agent(state, f"a{n:02}", chat=2)
    agent(state, "off", chat=2)
    presence(state, "off", "offline", T0)
    tid = state.on_message(message(1), T0).events[0].ticket_id
    d = state.tickets[tid].decision
    assert d["candidates"][0] == {"agent_id": d["chosen"], "verdict": "eligible"}
    assert len(d["candidates"]) == 20 + 2
    assert d["candidates"][-2:] == [
        {"agent_id": "*", "verdict": "10 more: 10 eligible"},
        {"agent_id": "*", "verdict": "1 more offline or without chat capacity"},
    ]


def test_a_possible_theft_is_served_first_by_its_own_categorys_agents(
    policy: RoutingPolicy,
) -> None:
    state = RouterState(policy)
    agent(state, "a1", chat=1, skills=["withdrawal"])
    first = state.on_message(message(1, category="withdrawal"), T0)
    state.on_message(message(2, category="withdrawal"), T0 + timedelta(seconds=1))
    ch = state.on_message(
        message(3, category="withdrawal", possible_urgent="stolen_funds"),
        T0 + timedelta(seconds=2),
    )
    [opened] = [e for e in ch.events if e.event == "opened"]
    assert (opened.priority, opened.category) == ("P1", "withdrawal")
    assert opened.possible_urgent == "stolen_funds"  # notify's acknowledgement advises on it
    assert "possible stolen_funds -> P1" in state.tickets[opened.ticket_id].reasons

    done = state.on_action(
        AgentActionTaken(
            agent_id="a1", ticket_id=first.events[0].ticket_id, action="resolve", at=T0
        ),
        "r1",
        T0,
    )

    # The possible theft that arrived later goes before the older withdrawal, to the
    # withdrawal agent (its category decides the skill).
    assigned = [e for e in done.events if e.event == "assigned"]
    assert [(e.ticket_id, e.agent_id) for e in assigned] == [(opened.ticket_id, "a1")]


def test_a_later_possible_theft_raises_the_ticket_but_keeps_its_category(
    policy: RoutingPolicy,
) -> None:
    state = RouterState(policy)
    state.on_message(message(1, category="withdrawal"), T0)
    ch = state.on_message(
        message(2, conversation_id="cnv_1", category="general", possible_urgent="stolen_funds"),
        T0 + timedelta(seconds=1),
    )

    [escalated] = [e for e in ch.events if e.event == "escalated"]
    assert (escalated.priority, escalated.category) == ("P1", "withdrawal")
    assert escalated.possible_urgent == "stolen_funds"


def test_a_message_that_confirms_the_possible_theft_gives_the_ticket_its_category(
    policy: RoutingPolicy,
) -> None:
    state = RouterState(policy)
    opened = state.on_message(
        message(1, category="withdrawal", possible_urgent="stolen_funds"), T0
    ).events[0]
    ch = state.on_message(
        message(2, conversation_id="cnv_1", category="stolen_funds"), T0 + timedelta(seconds=1)
    )

    # Already P1: the priority stays, the category becomes the confirmed one (its agents).
    [escalated] = [e for e in ch.events if e.event == "escalated"]
    assert (escalated.ticket_id, escalated.priority) == (opened.ticket_id, "P1")
    assert (escalated.category, escalated.possible_urgent) == ("stolen_funds", None)
    assert state.tickets[opened.ticket_id].need().category == "stolen_funds"
    # A further ordinary message changes nothing.
    again = state.on_message(
        message(3, conversation_id="cnv_1", category="withdrawal"), T0 + timedelta(seconds=2)
    )
    assert [e.event for e in again.events if e.event == "escalated"] == []


def test_an_agents_recategorization_clears_the_possible_category(
    policy: RoutingPolicy,
) -> None:
    state = RouterState(policy)
    ch = state.on_message(message(1, category="withdrawal", possible_urgent="stolen_funds"), T0)
    tid = ch.events[0].ticket_id
    # Stored and loaded again (a takeover): still a possible theft.
    assert ticket_from_doc(ticket_doc(state.tickets[tid])).possible_urgent == "stolen_funds"

    fixed = state.on_action(
        AgentActionTaken(
            agent_id="a1", ticket_id=tid, action="recategorize", at=T0, category="deposit"
        ),
        "r1",
        T0,
    )

    [event] = [e for e in fixed.events if e.event == "recategorized"]
    assert (event.category, event.possible_urgent) == ("deposit", None)
    assert event.priority != "P1"


def test_a_possible_category_is_named_only_where_it_raised_the_priority(
    policy: RoutingPolicy,
) -> None:
    state = RouterState(policy)
    opened = [
        state.on_message(
            message(n, category=category, possible_urgent="secret_exposed"), T0
        ).events[0]
        for n, category in ((1, "stolen_funds"), (2, "deposit"))
    ]
    # A theft report is P1 by itself: the possible secret raised nothing, so it is not named;
    # the deposit question is P1 only because of it.
    assert [(e.category, e.priority, e.possible_urgent) for e in opened] == [
        ("stolen_funds", "P1", None),
        ("deposit", "P1", "secret_exposed"),
    ]
