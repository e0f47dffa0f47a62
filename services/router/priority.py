"""Priority and queue order: pure functions of a ticket's facts, rules as data (routing.yaml)."""

from __future__ import annotations

import math
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.contracts.common import CATEGORIES, CHANNELS, Category, Channel, Priority

PRIORITIES: tuple[Priority, ...] = ("P1", "P2", "P3", "P4")
PRIORITY_RANK: dict[Priority, int] = {"P1": 1, "P2": 2, "P3": 3, "P4": 4}

# (priority rank, tier rank, age step, 0 if SLA at risk else 1, waiting since, ticket id)
QueueKey = tuple[int, int, int, int, float, str]


class CaseMerge(BaseModel):
    """The same customer reporting these in another conversation within the window: one case."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    categories: tuple[Category, ...] = ("stolen_funds", "account_takeover")
    window_s: float = Field(default=3600, ge=0)


class Emergency(BaseModel):
    """Work of these priorities may take `slots` tickets beyond capacity from security agents."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    priorities: tuple[Priority, ...] = ("P1",)
    slots: int = Field(default=1, ge=0, description="Per agent, across channels")


class Escalation(BaseModel):
    """What an SLA breach does to a ticket."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    raise_levels: int = Field(default=1, ge=0, description="Priority levels raised, P1 at most")
    supervisor_pool: tuple[Priority, ...] = Field(
        default=("P1",), description="Priorities (after raising) that move to supervisors"
    )


def _default_offer_timeouts() -> dict[Channel, float]:
    return {"chat": 30, "social": 60, "email": 120, "phone": 20}


class RoutingPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    priorities: dict[Priority, tuple[Category, ...]]
    vip_tiers: tuple[str, ...] = ()
    reopen_window_s: float = Field(default=7 * 24 * 3600, ge=0)
    ageing_step_s: float = Field(default=60, gt=0)
    case_merge: CaseMerge = CaseMerge()
    offer_timeout_s: dict[Channel, float] = Field(default_factory=_default_offer_timeouts)
    away_grace_s: float = Field(default=120, ge=0)
    emergency: Emergency = Emergency()
    escalation: Escalation = Escalation()

    @model_validator(mode="after")
    def _every_category_once(self) -> RoutingPolicy:
        listed = [c for cats in self.priorities.values() for c in cats]
        missing = set(CATEGORIES) - set(listed)
        doubled = {c for c in listed if listed.count(c) > 1}
        if missing or doubled:
            raise ValueError(f"categories missing {sorted(missing)}, doubled {sorted(doubled)}")
        unset = set(CHANNELS) - set(self.offer_timeout_s)
        if unset:
            raise ValueError(f"offer_timeout_s missing channels {sorted(unset)}")
        if any(v <= 0 for v in self.offer_timeout_s.values()):
            raise ValueError("offer_timeout_s must be positive")
        return self

    def priority_of(self, category: Category) -> Priority:
        for priority, categories in self.priorities.items():
            if category in categories:
                return priority
        raise KeyError(category)

    def tier_rank(self, tier: str) -> int:
        """0 for the highest VIP tier, len(vip_tiers) for standard customers."""
        return self.vip_tiers.index(tier) if tier in self.vip_tiers else len(self.vip_tiers)


def load_policy(path: Path) -> RoutingPolicy:
    return RoutingPolicy.model_validate(yaml.safe_load(path.read_text("utf-8")))


def prioritize(
    category: Category, tier: str, policy: RoutingPolicy, possible: Category | None = None
) -> tuple[Priority, tuple[str, ...]]:
    """(priority, reasons) for a ticket; the reasons answer "why P1?".

    `possible` is a category the classifier found likely enough to matter though it is not
    the likeliest (a possible theft in a withdrawal question): the ticket takes its
    priority when that is higher, and keeps its category (and so its agents' skill).
    """
    priority = policy.priority_of(category)
    reasons = [f"category {category} -> {priority}"]
    if (raising := raised_by(category, possible, policy)) is not None:
        priority = policy.priority_of(raising)
        reasons.append(f"possible {raising} -> {priority}")
    if tier in policy.vip_tiers:
        reasons.append(f"customer tier {tier}: served first within {priority}")
    return priority, tuple(reasons)


def raised_by(
    category: Category, possible: Category | None, policy: RoutingPolicy
) -> Category | None:
    """`possible` when it gives a ticket of `category` a higher priority than the category
    does (the ticket is then "possibly" of that category: its events say which)."""
    if possible is None:
        return None
    own, then = policy.priority_of(category), policy.priority_of(possible)
    return possible if PRIORITY_RANK[then] < PRIORITY_RANK[own] else None


def raised(priority: Priority, levels: int) -> Priority:
    """`priority` raised by `levels` (P1 stays P1)."""
    return PRIORITIES[max(0, PRIORITY_RANK[priority] - 1 - levels)]


def queue_key(
    priority: Priority,
    tier: str,
    waiting_since_ts: float,
    policy: RoutingPolicy,
    *,
    sla_risk: bool = False,
    ticket_id: str = "",
) -> QueueKey:
    """Order of waiting tickets, best first: priority, then VIP tier, then age, then SLA risk.

    Age counts in steps of `ageing_step_s` (by when the ticket started waiting, so the key
    never changes while it waits): within one step a ticket whose SLA warning arrived goes
    first; otherwise the longest waiting, and the ticket id makes the order total.
    """
    step = math.floor(waiting_since_ts / policy.ageing_step_s)
    return (
        PRIORITY_RANK[priority],
        policy.tier_rank(tier),
        step,
        0 if sla_risk else 1,
        waiting_since_ts,
        ticket_id,
    )
