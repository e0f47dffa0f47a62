"""Priority: a pure function of the message's category and the customer's tier, rules as data."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, model_validator

from shared.contracts.common import CATEGORIES, Category, Priority

PRIORITY_RANK: dict[Priority, int] = {"P1": 1, "P2": 2, "P3": 3, "P4": 4}


class RoutingPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    priorities: dict[Priority, tuple[Category, ...]]
    vip_tiers: tuple[str, ...] = ()
    reopen_window_s: float = 7 * 24 * 3600

    @model_validator(mode="after")
    def _every_category_once(self) -> RoutingPolicy:
        listed = [c for cats in self.priorities.values() for c in cats]
        missing = set(CATEGORIES) - set(listed)
        doubled = {c for c in listed if listed.count(c) > 1}
        if missing or doubled:
            raise ValueError(f"categories missing {sorted(missing)}, doubled {sorted(doubled)}")
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
    category: Category, tier: str, policy: RoutingPolicy
) -> tuple[Priority, tuple[str, ...]]:
    """(priority, reasons) for a ticket; the reasons answer "why P1?"."""
    priority = policy.priority_of(category)
    reasons = [f"category {category} -> {priority}"]
    if tier in policy.vip_tiers:
        reasons.append(f"customer tier {tier}: served first within {priority}")
    return priority, tuple(reasons)


def queue_key(
    priority: Priority, tier: str, waiting_since_ts: float, policy: RoutingPolicy
) -> tuple[int, int, float]:
    """Sort key of a waiting ticket: priority, then VIP tier, then longest waiting."""
    return (PRIORITY_RANK[priority], policy.tier_rank(tier), waiting_since_ts)
