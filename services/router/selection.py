"""Agent selection: who may take a ticket, and who should. Pure functions."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from shared.contracts.agents import AgentProfile, Presence
from shared.contracts.common import Category, Channel


@dataclass
class AgentState:
    agent_id: str
    profile: AgentProfile
    presence: Presence = "offline"
    load: dict[str, int] = field(default_factory=dict)
    tickets: set[str] = field(default_factory=set)
    last_assigned_at: datetime | None = None

    def spare(self, channel: Channel) -> int:
        return self.profile.capacity.get(channel, 0) - self.load.get(channel, 0)


@dataclass(frozen=True)
class Need:
    """What a ticket asks of an agent."""

    channel: Channel
    category: Category
    language: str


def ineligibility(agent: AgentState, need: Need) -> str | None:
    """Why this agent cannot take the ticket, or None if it can."""
    if agent.presence != "online":
        return f"presence {agent.presence}"
    skills = agent.profile.skills
    if skills and need.category not in skills:
        return f"no skill {need.category}"
    languages = agent.profile.languages
    if languages and need.language not in languages:
        return f"no language {need.language}"
    if agent.spare(need.channel) <= 0:
        return f"no {need.channel} capacity"
    return None


@dataclass(frozen=True)
class Choice:
    agent_id: str | None
    why: str
    candidates: tuple[tuple[str, str], ...]  # (agent_id, "eligible" | reason not)


def choose_agent(
    agents: Iterable[AgentState], need: Need, preferred_agent_id: str | None = None
) -> Choice:
    """Prefer the agent who last served the customer; else least loaded, then longest idle."""
    candidates: list[tuple[str, str]] = []
    eligible: list[AgentState] = []
    for agent in agents:
        reason = ineligibility(agent, need)
        candidates.append((agent.agent_id, reason or "eligible"))
        if reason is None:
            eligible.append(agent)
    if not eligible:
        return Choice(None, "no eligible agent", tuple(candidates))
    for agent in eligible:
        if agent.agent_id == preferred_agent_id:
            return Choice(agent.agent_id, "last handled this customer", tuple(candidates))

    def key(a: AgentState) -> tuple[float, float, str]:
        cap = a.profile.capacity.get(need.channel, 1) or 1
        idle_since = a.last_assigned_at.timestamp() if a.last_assigned_at else 0.0
        return (a.load.get(need.channel, 0) / cap, idle_since, a.agent_id)

    best = min(eligible, key=key)
    return Choice(best.agent_id, "least loaded, then longest idle", tuple(candidates))
