"""What notify decides to tell whom: causes from ticket and SLA events, expected response
times, incident matching, and the outbox's backoff and rate limit. Pure functions."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from services.notify.decide import (
    Facts,
    assignment_sample,
    incident_specs,
    matches,
    notices_for,
    on_sla_event,
    on_ticket_event,
    view_of,
)
from services.notify.outbox import Candidate, RateRule, backoff_s, plan_sends, schedule
from shared.contracts.incidents import Affected, Incident
from tests.support.factories import T0, sla_event, ticket_event


def incident(**over: object) -> Incident:
    data: dict[str, object] = {
        "incident_id": "inc_1",
        "status": "investigating",
        "severity": "major",
        "title": {"en": "BTC withdrawals delayed"},
        "version": 1,
        "created_at": T0,
        "updated_at": T0,
    }
    data.update(over)
    return Incident.model_validate(data)


# -- ticket events ----------------------------------------------------------------------


def test_a_ticket_life_tells_the_customer_each_step_once() -> None:
    events = [
        ticket_event("opened", 1, state="queued"),
        ticket_event("queued", 2, state="queued"),
        ticket_event("offered", 3, state="offered", agent_id="a1"),
        ticket_event("offer_expired", 4, state="queued"),
        ticket_event("assigned", 5, state="assigned", agent_id="a2"),
        ticket_event("waiting_on_customer", 6, state="waiting_on_customer"),
        ticket_event("customer_replied", 7, state="assigned"),
        ticket_event("resolved", 8, state="resolved"),
    ]
    view = None
    causes = []
    for n, ev in enumerate(events):
        view, specs = on_ticket_event(view, ev, f"e{n}")
        causes += [(s.cause, s.template) for s in specs]
    assert causes == [
        ("acknowledgement", "acknowledgement"),
        ("agent_assigned:1", "agent_assigned"),  # once, though offered twice
        ("waiting_for_you:6", "waiting_for_you"),
        ("resolved:8", "resolved"),
    ]
    assert view is not None
    assert not view.open


def test_redelivered_events_decide_nothing_and_reopen_starts_a_new_cycle() -> None:
    view, specs = on_ticket_event(None, ticket_event("opened", 1), "e1")
    again, nothing = on_ticket_event(view, ticket_event("opened", 1), "e1")
    assert again == view
    assert nothing == []
    view, _ = on_ticket_event(view, ticket_event("assigned", 2, state="assigned"), "e2")
    view, _ = on_ticket_event(view, ticket_event("resolved", 3, state="resolved"), "e3")
    view, _ = on_ticket_event(view, ticket_event("reopened", 4), "e4")
    view, specs = on_ticket_event(view, ticket_event("assigned", 5, state="assigned"), "e5")
    assert [s.cause for s in specs] == ["agent_assigned:2"]


@pytest.mark.parametrize(
    ("category", "template"),
    [
        ("secret_exposed", "acknowledgement_secret_exposed"),
        ("stolen_funds", "acknowledgement_stolen_funds"),
        ("account_takeover", "acknowledgement_stolen_funds"),
        ("deposit", "acknowledgement"),
    ],
)
def test_acknowledgement_template_follows_the_category(category: str, template: str) -> None:
    _, [spec] = on_ticket_event(None, ticket_event("opened", 1, category=category), "e1")
    assert spec.template == template
    assert spec.urgent == (template != "acknowledgement")


@pytest.mark.parametrize(
    ("category", "possible", "template"),
    [
        ("withdrawal", "stolen_funds", "acknowledgement_possible_theft"),
        ("login_2fa", "account_takeover", "acknowledgement_possible_theft"),
        ("general", "secret_exposed", "acknowledgement_possible_secret"),
        # The ticket's own urgent category wins over a possible one.
        ("stolen_funds", "secret_exposed", "acknowledgement_stolen_funds"),
    ],
)
def test_a_possible_urgent_ticket_is_acknowledged_with_that_categorys_advice(
    category: str, possible: str, template: str
) -> None:
    opened = ticket_event("opened", 1, category=category, priority="P1", possible_urgent=possible)
    view, [spec] = on_ticket_event(None, opened, "e1")
    assert spec.template == template and spec.urgent
    # Kept in the view: the acknowledgement decided when sla's deadline arrives reads it.
    assert view.possible_urgent == possible


def test_notification_ids_are_deterministic_per_ticket_and_cause() -> None:
    _, [a] = on_ticket_event(None, ticket_event("opened", 1), "e1")
    _, [b] = on_ticket_event(None, ticket_event("opened", 1), "other-event-id")
    _, [c] = on_ticket_event(None, ticket_event("opened", 1, ticket_id="tkt_2"), "e1")
    assert a.notification_id == b.notification_id != c.notification_id


# -- waiting for an agent ---------------------------------------------------------------


def test_a_ticket_waits_from_its_queueing_until_an_agent_has_it() -> None:
    opened, _ = on_ticket_event(None, ticket_event("opened", 1), "e1")
    assert opened.queued_since == T0
    later = T0 + timedelta(seconds=90)
    offered, _ = on_ticket_event(
        opened, ticket_event("offered", 2, state="offered", at=later), "e2"
    )
    assert offered.queued_since == T0  # an offer is not an agent yet
    placed = replace(offered, position=3)
    assigned, _ = on_ticket_event(
        placed, ticket_event("accepted", 3, state="assigned", at=later), "e3"
    )
    assert assigned.queued_since is None
    sample = assignment_sample(placed, assigned, ticket_event("accepted", 3, at=later))
    assert sample is not None
    assert (sample.wait_s, sample.position, sample.per_place_s) == (90, 3, 30)
    # Nothing to measure for a ticket that was not waiting.
    assert assignment_sample(assigned, assigned, ticket_event("assigned", 4, at=later)) is None


def test_sla_breach_apologises_once_per_timer_unless_the_ticket_is_done() -> None:
    breach = sla_event("breached")
    view = view_of(ticket_event("opened", 1, language="zh"))
    spec = on_sla_event(view, breach, "e9")
    assert spec is not None
    assert (spec.cause, spec.template, spec.language) == (
        "sla_breached:tmr_1",
        "sla_breached",
        "zh",
    )
    done = view_of(ticket_event("resolved", 3, state="resolved"))
    assert on_sla_event(done, breach, "e9") is None
    assert on_sla_event(view, breach.model_copy(update={"event": "warning"}), "e9") is None


# -- incidents ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("affected", "category", "facts", "expected"),
    [
        # Category only: every open ticket of the category.
        ({"categories": ["withdrawal"]}, "withdrawal", Facts(), True),
        ({"categories": ["withdrawal"]}, "deposit", Facts(), False),
        # Category and asset: a ticket naming another asset is out; one naming none is in.
        ({"categories": ["withdrawal"], "assets": ["btc"]}, "withdrawal", Facts({"BTC"}), True),
        ({"categories": ["withdrawal"], "assets": ["BTC"]}, "withdrawal", Facts({"ETH"}), False),
        ({"categories": ["withdrawal"], "assets": ["BTC"]}, "withdrawal", Facts(), True),
        # Asset or network only: the ticket must have named it.
        ({"assets": ["USDT"]}, "deposit", Facts({"USDT"}), True),
        ({"assets": ["USDT"]}, "deposit", Facts(), False),
        ({"networks": ["TRON"]}, "deposit", Facts(networks=frozenset({"tron"})), True),
        ({"networks": ["tron"]}, "deposit", Facts(networks=frozenset({"eth"})), False),
        # Nothing named: platform-wide.
        ({}, "trading", Facts(), True),
        # Regions are not matched (tickets carry none).
        ({"regions": ["EU"]}, "trading", Facts(), True),
    ],
)
def test_incident_matching(
    affected: dict[str, list[str]], category: str, facts: Facts, expected: bool
) -> None:
    inc = incident(affected=Affected.model_validate(affected))
    assert matches(inc, category, facts) is expected


def test_a_resolved_incident_matches_nothing_new() -> None:
    inc = incident(status="resolved", affected=Affected(categories=("withdrawal",)))
    assert not matches(inc, "withdrawal", Facts())
    assert notices_for([inc], "withdrawal", Facts()) == ()


def test_incident_updates_go_once_to_matching_open_tickets_then_once_at_resolution() -> None:
    inc = incident(affected=Affected(categories=("withdrawal",)))
    a = view_of(ticket_event("opened", 1, ticket_id="tkt_a", category="withdrawal"))
    b = view_of(ticket_event("opened", 1, ticket_id="tkt_b", category="deposit"))
    c = view_of(ticket_event("resolved", 1, ticket_id="tkt_c", state="resolved"))
    specs, linked = incident_specs(inc, [(a, Facts()), (b, Facts()), (c, Facts())], [], "e1")
    assert linked == ["tkt_a"]
    assert [(s.ticket_id, s.cause) for s in specs] == [("tkt_a", "incident:inc_1:open")]
    # A later update of the incident decides the same ids (the outbox keeps one each).
    updated = inc.model_copy(update={"status": "identified", "version": 2})
    again, _ = incident_specs(updated, [(a, Facts())], [], "e2")
    assert again[0].notification_id == specs[0].notification_id
    resolved = inc.model_copy(update={"status": "resolved", "version": 3})
    done, linked = incident_specs(resolved, [(a, Facts())], [a], "e3")
    assert linked == []
    assert [(s.ticket_id, s.cause, s.template) for s in done] == [
        ("tkt_a", "incident:inc_1:resolved", "incident_resolved")
    ]


# -- outbox: backoff and rate limit -------------------------------------------------------


def test_backoff_doubles_up_to_the_cap() -> None:
    assert schedule(2.0, 300.0, 6) == [2.0, 4.0, 8.0, 16.0, 32.0]
    assert schedule(2.0, 10.0, 6) == [2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff_s(20, 1.0, 60.0) == 60.0


def test_backoff_jitter_is_deterministic_and_at_most_a_fifth() -> None:
    waits = [backoff_s(3, 2.0, 300.0, f"ntf_{n}") for n in range(50)]
    assert all(6.4 <= w <= 8.0 for w in waits)
    assert len(set(waits)) > 40  # spread out
    assert backoff_s(3, 2.0, 300.0, "ntf_1") == backoff_s(3, 2.0, 300.0, "ntf_1")


def c(nid: str, customer: str = "cus_1", ticket: str = "tkt_1", **over: object) -> Candidate:
    data: dict[str, object] = {
        "notification_id": nid,
        "customer_id": customer,
        "ticket_id": ticket,
        "template": "acknowledgement",
        "created_at": T0,
    }
    data.update(over)
    return Candidate(**data)  # type: ignore[arg-type]


def test_rate_limit_lets_k_per_window_through_and_delays_the_rest_in_order() -> None:
    rule = RateRule(max_count=3, window_s=60)
    now = T0 + timedelta(seconds=100)
    recent = {"cus_1": [now - timedelta(seconds=50), now - timedelta(seconds=90)]}
    burst = [c(f"n{i}", ticket=f"t{i}", created_at=T0 + timedelta(seconds=i)) for i in range(4)] + [
        c("other", customer="cus_2", ticket="tx")
    ]
    plan = plan_sends(burst, recent, now, rule)
    # One message sent 90 s ago is out of the window; 50 s ago is in: room for two more.
    assert sorted(plan.send) == ["n0", "n1", "other"]
    assert plan.delay == {
        "n2": now - timedelta(seconds=50) + timedelta(seconds=60),
        "n3": now + timedelta(seconds=60),
    }


def test_urgent_security_messages_are_never_held_back() -> None:
    rule = RateRule(max_count=1, window_s=60)
    recent = {"cus_1": [T0]}
    plan = plan_sends(
        [c("ack", template="acknowledgement_stolen_funds", urgent=True)], recent, T0, rule
    )
    assert plan.send == ["ack"]


def test_a_stale_status_update_is_merged_into_the_newer_one() -> None:
    rule = RateRule(max_count=5, window_s=60)
    plan = plan_sends(
        [
            c("on_it", template="agent_assigned", created_at=T0),
            c("done", template="resolved", created_at=T0 + timedelta(seconds=5)),
            c("ack", template="acknowledgement", created_at=T0 - timedelta(seconds=5)),
        ],
        {},
        T0 + timedelta(seconds=10),
        rule,
    )
    assert plan.merged == {"on_it": "done"}
    assert plan.send == ["ack", "done"]
