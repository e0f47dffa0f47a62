"""`support.agents`: desk and agent actions, keyed by agent id."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from shared.contracts.common import MAX_INT64, Category, Channel, Contract, UtcDatetime

AGENT_PROFILE_UPDATED = "omniroute.agent.profile_updated.v1"
AGENT_PRESENCE_CHANGED = "omniroute.agent.presence_changed.v1"
AGENT_ACTION_TAKEN = "omniroute.agent.action_taken.v1"

DEFAULT_CAPACITY: dict[Channel, int] = {"chat": 3, "email": 8, "social": 5, "phone": 1}

Presence = Literal["online", "away", "offline"]
AgentActionName = Literal["accept", "decline", "reply", "wait", "resolve", "recategorize"]


class AgentProfile(Contract):
    name: str = Field(min_length=1, max_length=200)
    skills: tuple[Category, ...] = Field(default=(), description="Categories the agent handles")
    languages: tuple[str, ...] = ("en",)
    capacity: dict[Channel, Annotated[int, Field(le=MAX_INT64)]] = Field(
        default_factory=lambda: dict(DEFAULT_CAPACITY),
        description="Concurrent tickets per channel",
    )
    auto_accept: bool = False
    security: bool = Field(
        default=False, description="Security skill: may take P1 work in an emergency slot"
    )
    supervisor: bool = Field(
        default=False, description="Takes escalated work moved to the supervisor pool"
    )


class AgentProfileUpdated(Contract):
    """An agent's profile as set at the desk: skills, languages, capacity per channel."""

    agent_id: str
    profile: AgentProfile
    at: UtcDatetime


class AgentPresenceChanged(Contract):
    """An agent came online, stepped away or went offline."""

    agent_id: str
    status: Presence
    at: UtcDatetime


class AgentActionTaken(Contract):
    """An agent acted on a ticket: accepted, declined, replied, waited, resolved, recategorized."""

    agent_id: str
    ticket_id: str
    action: AgentActionName
    at: UtcDatetime
    note: str | None = Field(default=None, description="Free text from the desk (not routed)")
    category: Category | None = Field(
        default=None, description="On `recategorize`: the category the agent says is right"
    )


# What `support.agents` carries.
AgentEvent = AgentProfileUpdated | AgentPresenceChanged | AgentActionTaken
