"""The router state's records: a ticket as the engine holds it, and what one input changed.
No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.router.actions import ActionOutcome
from services.router.queue import ClassKey
from services.router.selection import AgentState, Need
from shared.contracts.common import Category, Channel, Priority
from shared.contracts.tickets import TicketEvent
from shared.ids import stable_id

OPEN_STATES = frozenset({"queued", "offered", "assigned", "waiting_on_customer"})
ACCEPTED_WORK = frozenset({"assigned", "waiting_on_customer"})
PASSED_KEPT = 16
CANDIDATES_LISTED = 20  # in a decision record; the rest are counted

OFFER = "offer"
REQUEUE = "requeue"


@dataclass
class Ticket:
    ticket_id: str
    customer_id: str
    customer_tier: str
    channel: Channel
    category: Category
    priority: Priority
    language: str
    state: str
    opened_at: datetime
    updated_at: datetime
    # When the current opening started waiting: kept through expiries and requeues, so a
    # ticket coming back to the queue keeps its age.
    waiting_since: datetime
    agent_id: str | None = None
    conversation_ids: list[str] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    decision: dict[str, Any] = field(default_factory=dict)
    sequence: int = 0
    resolved_at: datetime | None = None
    pool: str = "general"
    emergency: bool = False
    sla_risk: bool = False
    escalated: bool = False
    offer_expires_at: datetime | None = None
    passed_by: list[str] = field(default_factory=list)  # agents who declined / let expire
    breaches: list[str] = field(default_factory=list)  # SLA timer ids already escalated
    message_at: datetime | None = None  # the message that started the current opening
    offered_at: datetime | None = None  # first offer of the current opening
    accepted_at: datetime | None = None
    case_reported_at: datetime | None = None  # last stolen-funds/takeover report (merging)
    handled_by: str | None = None  # the agent who last accepted it
    handled_at: datetime | None = None
    position: int = 0
    routed: bool = True  # False between `opened`/`reopened` and its first routing decision
    # The category a message possibly concerns that raised the priority (a possible theft
    # in a withdrawal question): notify's acknowledgement gives that category's advice.
    possible_urgent: Category | None = None

    def need(self) -> Need:
        return Need(self.channel, self.category, self.language, self.priority, self.pool)

    def klass(self) -> ClassKey:
        return (self.pool, self.channel, self.category, self.language)


# (what, priority, channel, seconds): "offer" / "accept" latencies for the histograms
Timing = tuple[str, Priority, Channel, float]


@dataclass
class Changes:
    """What one input changed: documents to store, events to publish, facts to measure."""

    events: list[TicketEvent] = field(default_factory=list)
    tickets: dict[str, Ticket] = field(default_factory=dict)
    agents: dict[str, AgentState] = field(default_factory=dict)
    timings: list[Timing] = field(default_factory=list)
    expired: list[tuple[Channel, str]] = field(default_factory=list)  # (channel, why)
    outcomes: dict[str, ActionOutcome] = field(default_factory=dict)  # by action event id

    def merge(self, other: Changes) -> None:
        self.events.extend(other.events)
        self.tickets.update(other.tickets)
        self.agents.update(other.agents)
        self.timings.extend(other.timings)
        self.expired.extend(other.expired)
        self.outcomes.update(other.outcomes)

    def __bool__(self) -> bool:
        return bool(self.events or self.tickets or self.agents or self.outcomes)


def ticket_id_for(message_id: str) -> str:
    return stable_id("tkt", message_id, length=20)
