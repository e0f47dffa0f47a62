"""Agent selection: who may take a ticket, and who should. Pure functions.

Eligible: online, in the ticket's pool (supervisors only, once escalated there), the
category among the agent's skills, the ticket's language among theirs, and spare capacity
on the ticket's channel. Emergency work (P1 by policy) that finds nobody eligible may take
one slot beyond capacity from an agent with `security`, on a channel they work.

Preference: agents who have not passed on the ticket (declined or let the offer expire),
then the agent who last served the customer, then the least loaded (share of capacity on
the channel), then the longest idle.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from services.router.priority import RoutingPolicy
from shared.contracts.agents import AgentProfile, Presence
from shared.contracts.common import Category, Channel, Priority

Pool = str  # "general" | "supervisor"


@dataclass
class AgentState:
    agent_id: str
    profile: AgentProfile
    presence: Presence = "offline"
    load: dict[str, int] = field(default_factory=dict)
    tickets: set[str] = field(default_factory=set)
    last_assigned_at: datetime | None = None
    presence_since: datetime | None = None
    # While away/offline with accepted work: when that work goes back to the queue.
    requeue_due_at: datetime | None = None

    def spare(self, channel: Channel) -> int:
        return self.profile.capacity.get(channel, 0) - self.load.get(channel, 0)

    def overflow(self) -> int:
        """Tickets held beyond capacity, all channels: emergency slots in use."""
        return sum(
            max(0, n - self.profile.capacity.get(ch, 0))  # type: ignore[call-overload]
            for ch, n in self.load.items()
        )


@dataclass(frozen=True)
class Need:
    """What a ticket asks of an agent."""

    channel: Channel
    category: Category
    language: str
    priority: Priority = "P4"
    pool: Pool = "general"


def fit(profile: AgentProfile, presence: Presence, need: Need) -> str | None:
    """Why this agent cannot take the ticket whatever its load, or None."""
    if presence != "online":
        return f"presence {presence}"
    if need.pool == "supervisor" and not profile.supervisor:
        return "not a supervisor"
    skills = profile.skills
    if skills and need.category not in skills:
        return f"no skill {need.category}"
    languages = profile.languages
    if languages and need.language not in languages:
        return f"no language {need.language}"
    return None


def ineligibility(agent: AgentState, need: Need) -> str | None:
    """Why this agent cannot take the ticket within capacity, or None if it can."""
    reason = fit(agent.profile, agent.presence, need)
    if reason is not None:
        return reason
    if agent.spare(need.channel) <= 0:
        return f"no {need.channel} capacity"
    return None


def emergency_ineligibility(agent: AgentState, need: Need, policy: RoutingPolicy) -> str | None:
    """Why this agent cannot take the ticket in an emergency slot, or None if it can."""
    if need.priority not in policy.emergency.priorities:
        return f"{need.priority} has no emergency slot"
    reason = fit(agent.profile, agent.presence, need)
    if reason is not None:
        return reason
    if not agent.profile.security:
        return "no security skill for an emergency slot"
    if agent.profile.capacity.get(need.channel, 0) <= 0:
        return f"does not work {need.channel}"
    if agent.overflow() >= policy.emergency.slots:
        return "emergency slot in use"
    return None


def may_take(agent: AgentState, need: Need, policy: RoutingPolicy) -> bool:
    """Within capacity or in an emergency slot: what the no-waiting invariant is about."""
    return (
        ineligibility(agent, need) is None or emergency_ineligibility(agent, need, policy) is None
    )


@dataclass(frozen=True)
class Choice:
    agent_id: str | None
    why: str
    candidates: tuple[tuple[str, str], ...]  # (agent_id, "eligible" | reason not)
    emergency: bool = False


def preference(
    agent: AgentState,
    channel: Channel,
    preferred_agent_id: str | None,
    passed_by: Sequence[str],
) -> tuple[int, int, float, float, str]:
    """Sort key of an eligible agent, best first."""
    # Those who passed come last, the earliest passer first: offers rotate.
    passed = passed_by.index(agent.agent_id) + 1 if agent.agent_id in passed_by else 0
    cap = agent.profile.capacity.get(channel, 0) or 1
    idle_since = agent.last_assigned_at.timestamp() if agent.last_assigned_at else 0.0
    return (
        passed,
        0 if agent.agent_id == preferred_agent_id else 1,
        agent.load.get(channel, 0) / cap,
        idle_since,
        agent.agent_id,
    )


def _why(best: AgentState, preferred_agent_id: str | None, passed_by: Sequence[str]) -> str:
    if best.agent_id in passed_by:
        return "only eligible agents had passed on it: back to the earliest"
    if best.agent_id == preferred_agent_id:
        return "last handled this customer"
    return "least loaded, then longest idle"


def choose_agent(
    agents: Iterable[AgentState],
    need: Need,
    policy: RoutingPolicy,
    preferred_agent_id: str | None = None,
    passed_by: Sequence[str] = (),
) -> Choice:
    """The best agent for a ticket within capacity, else in an emergency slot, else none."""
    candidates: list[tuple[str, str]] = []
    eligible: list[AgentState] = []
    emergency: list[AgentState] = []
    for agent in agents:
        reason = ineligibility(agent, need)
        if reason is None:
            eligible.append(agent)
        elif emergency_ineligibility(agent, need, policy) is None:
            emergency.append(agent)
            reason = f"{reason}; emergency slot free"
        candidates.append((agent.agent_id, reason or "eligible"))
    pool, is_emergency = (eligible, False) if eligible else (emergency, True)
    if not pool:
        return Choice(None, "no eligible agent", tuple(candidates))
    best = min(pool, key=lambda a: preference(a, need.channel, preferred_agent_id, passed_by))
    why = _why(best, preferred_agent_id, passed_by)
    if is_emergency:
        why = f"{need.priority} emergency slot beyond capacity (security agent); {why}"
    return Choice(best.agent_id, why, tuple(candidates), emergency=is_emergency)
