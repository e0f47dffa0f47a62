"""Matching: who may take a ticket, and who should. Pure functions."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from services.router.priority import load_policy
from services.router.selection import (
    AgentState,
    Need,
    choose_agent,
    emergency_ineligibility,
    ineligibility,
)
from shared.contracts.agents import AgentProfile
from shared.settings import REPO_POLICY_DIR
from tests.support.factories import T0

POLICY = load_policy(REPO_POLICY_DIR / "routing.yaml")
CHAT_EN = Need("chat", "deposit", "en", "P2")
P1_CHAT = Need("chat", "stolen_funds", "en", "P1")


def agent(aid: str, *, load: int = 0, idle_s: float | None = None, **kw: Any) -> AgentState:
    profile = AgentProfile.model_validate({"name": aid, "capacity": {"chat": 2}, **kw})
    return AgentState(
        aid,
        profile,
        presence="online",
        load={"chat": load} if load else {},
        last_assigned_at=T0 - timedelta(seconds=idle_s) if idle_s is not None else None,
    )


def test_eligibility_reasons() -> None:
    assert ineligibility(agent("a"), CHAT_EN) is None
    away = agent("a")
    away.presence = "away"
    assert ineligibility(away, CHAT_EN) == "presence away"
    assert ineligibility(agent("a", skills=["kyc"]), CHAT_EN) == "no skill deposit"
    assert ineligibility(agent("a", languages=["zh"]), CHAT_EN) == "no language en"
    assert ineligibility(agent("a", load=2), CHAT_EN) == "no chat capacity"
    assert ineligibility(agent("a"), Need("phone", "deposit", "en")) == "no phone capacity"
    # No skills or languages listed means all of them.
    assert ineligibility(agent("a", skills=[], languages=[]), CHAT_EN) is None


def test_the_supervisor_pool_takes_supervisors_only() -> None:
    escalated = Need("chat", "deposit", "en", "P1", "supervisor")
    assert ineligibility(agent("a"), escalated) == "not a supervisor"
    assert ineligibility(agent("s", supervisor=True), escalated) is None
    # Supervisors take ordinary work too.
    assert ineligibility(agent("s", supervisor=True), CHAT_EN) is None


def test_the_agent_who_last_served_the_customer_comes_first() -> None:
    agents = [agent("busy", load=1), agent("free")]
    choice = choose_agent(agents, CHAT_EN, POLICY, preferred_agent_id="busy")
    assert (choice.agent_id, choice.why) == ("busy", "last handled this customer")
    # ... only while eligible.
    agents[0].load["chat"] = 2
    assert choose_agent(agents, CHAT_EN, POLICY, preferred_agent_id="busy").agent_id == "free"


def test_least_loaded_share_then_longest_idle() -> None:
    big = agent("big", load=2, capacity={"chat": 8})  # 25 % busy
    small = agent("small", load=1, capacity={"chat": 2})  # 50 % busy
    assert choose_agent([small, big], CHAT_EN, POLICY).agent_id == "big"
    recent, idle = agent("recent", idle_s=5), agent("idle", idle_s=500)
    choice = choose_agent([recent, idle], CHAT_EN, POLICY)
    assert (choice.agent_id, choice.why) == ("idle", "least loaded, then longest idle")
    never = agent("never")  # never assigned counts as idle the longest
    assert choose_agent([idle, never], CHAT_EN, POLICY).agent_id == "never"


def test_agents_who_passed_come_last_in_the_order_they_passed() -> None:
    a, b, c = agent("a"), agent("b"), agent("c")
    assert choose_agent([a, b, c], CHAT_EN, POLICY, passed_by=["a", "b"]).agent_id == "c"
    # Everyone passed: the offer rotates back to the earliest passer.
    choice = choose_agent([a, b], CHAT_EN, POLICY, passed_by=["b", "a"])
    assert choice.agent_id == "b"
    assert choice.why.startswith("only eligible agents had passed")
    # Having passed outweighs having served the customer before.
    assert choose_agent([a, c], CHAT_EN, POLICY, "a", passed_by=["a"]).agent_id == "c"


def test_candidates_record_every_verdict() -> None:
    choice = choose_agent([agent("ok"), agent("zh", languages=["zh"])], CHAT_EN, POLICY)
    assert choice.candidates == (("ok", "eligible"), ("zh", "no language en"))
    none = choose_agent([agent("zh", languages=["zh"])], CHAT_EN, POLICY)
    assert (none.agent_id, none.why) == (None, "no eligible agent")


def test_p1_takes_one_emergency_slot_from_a_security_agent_when_nobody_is_free() -> None:
    full_security = agent("sec", load=2, security=True)
    full_plain = agent("plain", load=2)
    choice = choose_agent([full_plain, full_security], P1_CHAT, POLICY)
    assert (choice.agent_id, choice.emergency) == ("sec", True)
    assert "emergency slot" in choice.why
    assert dict(choice.candidates)["sec"] == "no chat capacity; emergency slot free"
    # Anyone within capacity is preferred to an emergency slot.
    assert choose_agent([full_security, agent("free")], P1_CHAT, POLICY).agent_id == "free"
    # Only P1 (by policy); only one slot per agent; only on channels the agent works.
    assert choose_agent([full_security], CHAT_EN, POLICY).agent_id is None
    full_security.load["chat"] = 3
    assert emergency_ineligibility(full_security, P1_CHAT, POLICY) == "emergency slot in use"
    phone = Need("phone", "stolen_funds", "en", "P1")
    assert emergency_ineligibility(agent("s", security=True), phone, POLICY) == (
        "does not work phone"
    )
    # The slot counts across channels: overflow on email uses it up for chat too.
    other = agent("s", security=True, capacity={"chat": 2, "email": 1}, load=2)
    other.load["email"] = 2
    assert emergency_ineligibility(other, P1_CHAT, POLICY) == "emergency slot in use"
    # Still subject to skills and languages.
    zh = agent("zh", load=2, security=True, languages=["zh"])
    assert emergency_ineligibility(zh, P1_CHAT, POLICY) == "no language en"
