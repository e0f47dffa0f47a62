"""SLA policy as data (policy/sla.yaml): targets, refinements, calendars. No I/O but loading.

Which targets apply to a ticket, most specific first:

1. the first rule in `policies` whose `match` holds for the ticket (channel, VIP tier,
   category) and that names targets for its priority — with that rule's calendar and
   warning ratio;
2. otherwise `channel_overrides[channel][priority]`, then `targets[priority]` — with the
   top-level `calendar` (none: calendar time, 24/7) and `warning_ratio`.

Targets are seconds of business time: calendar seconds unless a calendar applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from services.sla.calendar import BusinessHours, CalendarSpec, add_business
from shared.contracts.common import Category, Channel, Priority
from shared.contracts.sla import SlaMetric

PRIORITIES: tuple[Priority, ...] = ("P1", "P2", "P3", "P4")
DEFAULT_POLICY = "default"


class Targets(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    first_response_s: float = Field(gt=0, description="Until the first agent reply")
    next_response_s: float = Field(gt=0, description="From a customer message to the reply")
    resolution_s: float = Field(gt=0, description="From (re)opening to resolved")

    def of(self, metric: SlaMetric) -> float:
        return float(getattr(self, f"{metric}_s"))


class Match(BaseModel):
    """Conditions of a rule; a condition left out matches everything."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    channels: list[Channel] | None = None
    tiers: list[str] | None = Field(default=None, description="customer_tier values, e.g. vip5")
    categories: list[Category] | None = None

    def holds(self, channel: Channel, tier: str, category: Category | None) -> bool:
        return (
            (self.channels is None or channel in self.channels)
            and (self.tiers is None or tier in self.tiers)
            and (self.categories is None or category in self.categories)
        )


class PolicyRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(min_length=1)
    match: Match = Field(default_factory=Match)
    calendar: str | None = Field(default=None, description="A calendar's name; none: 24/7")
    warning_ratio: float | None = Field(default=None, gt=0, lt=1)
    targets: dict[Priority, Targets] = Field(min_length=1)


@dataclass(frozen=True)
class Resolved:
    """The targets that apply to one ticket, and how time is counted for them."""

    policy: str
    targets: Targets
    calendar: str | None
    warning_ratio: float


class SlaPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    warning_ratio: float = Field(default=0.75, gt=0, lt=1)
    calendar: str | None = Field(default=None, description="Calendar of the default targets")
    targets: dict[Priority, Targets]
    channel_overrides: dict[Channel, dict[Priority, Targets]] = Field(default_factory=dict)
    calendars: dict[str, CalendarSpec] = Field(default_factory=dict)
    policies: list[PolicyRule] = Field(default_factory=list)
    _hours: dict[str, BusinessHours] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> SlaPolicy:
        missing = [p for p in PRIORITIES if p not in self.targets]
        if missing:
            raise ValueError(f"targets: every priority needs targets; missing {missing}")
        names = [r.name for r in self.policies]
        if len(set(names)) != len(names) or DEFAULT_POLICY in names:
            raise ValueError(f"policies: names must be unique and not {DEFAULT_POLICY!r}")
        for where, cal in [("calendar", self.calendar)] + [
            (f"policies[{r.name}].calendar", r.calendar) for r in self.policies
        ]:
            if cal is not None and cal not in self.calendars:
                raise ValueError(f"{where}: unknown calendar {cal!r}")
        self._hours = {name: spec.compile(name) for name, spec in self.calendars.items()}
        return self

    def resolve(
        self,
        priority: Priority,
        channel: Channel,
        tier: str = "standard",
        category: Category | None = None,
    ) -> Resolved:
        for rule in self.policies:
            targets = rule.targets.get(priority)
            if targets is not None and rule.match.holds(channel, tier, category):
                return Resolved(
                    rule.name,
                    targets,
                    rule.calendar,
                    rule.warning_ratio if rule.warning_ratio is not None else self.warning_ratio,
                )
        refined = self.channel_overrides.get(channel, {}).get(priority)
        return Resolved(
            DEFAULT_POLICY, refined or self.targets[priority], self.calendar, self.warning_ratio
        )

    def target(
        self,
        priority: Priority,
        channel: Channel,
        metric: SlaMetric,
        tier: str = "standard",
        category: Category | None = None,
    ) -> float:
        """Target in (business) seconds, e.g. for a customer-facing estimate."""
        return self.resolve(priority, channel, tier, category).targets.of(metric)

    def hours(self, calendar: str | None) -> BusinessHours | None:
        """The compiled calendar of that name; None (24/7) for no name."""
        return None if calendar is None else self._hours[calendar]

    def due_at(
        self,
        priority: Priority,
        channel: Channel,
        metric: SlaMetric,
        start: datetime,
        tier: str = "standard",
        category: Category | None = None,
    ) -> datetime:
        """When a timer started at `start` and never paused falls due."""
        r = self.resolve(priority, channel, tier, category)
        return add_business(self.hours(r.calendar), start, timedelta(seconds=r.targets.of(metric)))


def load_policy(path: Path) -> SlaPolicy:
    return SlaPolicy.model_validate(yaml.safe_load(path.read_text("utf-8")))
