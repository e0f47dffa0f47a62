"""Priority and queue order: pure functions, rules as data."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.router.priority import (
    RoutingPolicy,
    load_policy,
    prioritize,
    queue_key,
    raised,
)
from shared.contracts.common import Category, Priority
from shared.settings import REPO_POLICY_DIR

POLICY = load_policy(REPO_POLICY_DIR / "routing.yaml")
T = 1_794_999_960.0  # a waiting-since timestamp on a step boundary
assert T % POLICY.ageing_step_s == 0


@pytest.mark.parametrize(
    ("category", "priority"),
    [
        ("stolen_funds", "P1"),
        ("account_takeover", "P1"),
        ("secret_exposed", "P1"),
        ("withdrawal", "P2"),
        ("deposit", "P2"),
        ("login_2fa", "P3"),
        ("kyc", "P3"),
        ("scam_report", "P3"),
        ("trading", "P4"),
        ("general", "P4"),
    ],
)
def test_every_category_has_its_priority(category: Category, priority: Priority) -> None:
    got, reasons = prioritize(category, "standard", POLICY)
    assert got == priority
    assert reasons == (f"category {category} -> {priority}",)


def test_vip_tier_is_a_reason_not_a_priority() -> None:
    priority, reasons = prioritize("general", "vip7", POLICY)
    assert priority == "P4"
    assert reasons[1] == "customer tier vip7: served first within P4"
    assert POLICY.tier_rank("vip9") < POLICY.tier_rank("vip1") < POLICY.tier_rank("standard")


def test_raising_stops_at_p1() -> None:
    assert raised("P4", 1) == "P3"
    assert raised("P3", 2) == "P1"
    assert raised("P2", 5) == "P1"
    assert raised("P1", 1) == "P1"
    assert raised("P2", 0) == "P2"


def key(
    priority: Priority = "P3", tier: str = "standard", since: float = T, **kw: object
) -> object:
    return queue_key(priority, tier, since, POLICY, **kw)  # type: ignore[arg-type]


def test_queue_order_priority_then_tier_then_age_then_sla_risk() -> None:
    # Priority beats everything: an old VIP P2 at risk waits behind a new standard P1.
    assert key("P1", since=T + 3600) < key("P2", "vip9", since=T, sla_risk=True)
    # Within a priority the VIP tier beats age.
    assert key(tier="vip1", since=T + 3600) < key(tier="standard", since=T)
    # Then age, in steps: a whole step longer waiting beats SLA risk ...
    assert key(since=T) < key(since=T + POLICY.ageing_step_s, sla_risk=True)
    # ... and within a step a ticket whose SLA warning arrived goes first.
    assert key(since=T + 30, sla_risk=True) < key(since=T)
    # Otherwise the longest waiting, and the ticket id makes the order total.
    assert key(since=T) < key(since=T + 1)
    assert key(ticket_id="a") < key(ticket_id="b")


def test_shipped_policy_has_the_engine_rules() -> None:
    assert POLICY.case_merge.categories == ("stolen_funds", "account_takeover")
    assert POLICY.case_merge.window_s == 3600
    assert POLICY.offer_timeout_s == {"chat": 30, "social": 60, "email": 120, "phone": 20}
    assert POLICY.away_grace_s == 120
    assert POLICY.emergency.priorities == ("P1",) and POLICY.emergency.slots == 1
    assert POLICY.escalation.raise_levels == 1
    assert POLICY.escalation.supervisor_pool == ("P1",)


def test_a_minimal_policy_gets_safe_defaults() -> None:
    minimal = RoutingPolicy.model_validate({"priorities": POLICY.priorities})
    assert minimal.emergency.slots == 1
    assert set(minimal.offer_timeout_s) == {"chat", "social", "email", "phone"}


@pytest.mark.parametrize(
    "broken",
    [
        {"offer_timeout_s": {"chat": 30}},
        {"offer_timeout_s": {"chat": 0, "social": 1, "email": 1, "phone": 1}},
        {"emergency": {"slots": -1}},
        {"escalation": {"raise_levels": 1, "supervisor_pool": ["P9"]}},
        {"case_merge": {"window_s": 60, "extra": True}},
        {"ageing_step_s": 0},
    ],
)
def test_broken_rules_are_refused(broken: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RoutingPolicy.model_validate({"priorities": POLICY.priorities, **broken})


def test_a_possible_urgent_category_raises_the_priority_and_keeps_the_category() -> None:
    priority, reasons = prioritize("withdrawal", "standard", POLICY, possible="stolen_funds")

    assert priority == "P1"
    assert reasons == ("category withdrawal -> P2", "possible stolen_funds -> P1")


def test_a_possible_category_of_no_higher_priority_changes_nothing() -> None:
    assert prioritize("stolen_funds", "standard", POLICY, possible="account_takeover") == (
        "P1",
        ("category stolen_funds -> P1",),
    )
    assert prioritize("withdrawal", "standard", POLICY, possible="deposit")[0] == "P2"
