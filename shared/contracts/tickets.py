"""`support.tickets`: every change of a ticket, keyed by ticket id."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.contracts.common import (
    MAX_INT64,
    Category,
    Channel,
    Contract,
    Priority,
    UtcDatetime,
)

TicketEventName = Literal[
    "opened",
    "message_added",
    "queued",
    "offered",
    "assigned",
    "offer_expired",
    "accepted",
    "agent_replied",
    "waiting_on_customer",
    "customer_replied",
    "escalated",
    "reassigned",
    "resolved",
    "reopened",
    "recategorized",
    "action_rejected",
]
TICKET_EVENT_NAMES: tuple[TicketEventName, ...] = (
    "opened",
    "message_added",
    "queued",
    "offered",
    "assigned",
    "offer_expired",
    "accepted",
    "agent_replied",
    "waiting_on_customer",
    "customer_replied",
    "escalated",
    "reassigned",
    "resolved",
    "reopened",
    "recategorized",
    "action_rejected",
)


def ticket_event_type(event: TicketEventName) -> str:
    """CloudEvents type of a ticket event, e.g. `omniroute.ticket.opened.v1`."""
    return f"omniroute.ticket.{event}.v1"


class TicketEvent(Contract):
    """One change of a ticket. `action_rejected` changes nothing: an agent's action the
    ticket did not take (its reasons say whose and why); consumers that follow the
    ticket's state can ignore it, as they ignore any event they do not act on."""

    ticket_id: str
    event: TicketEventName
    priority: Priority
    category: Category
    channel: Channel
    customer_id: str
    customer_tier: str = "standard"
    agent_id: str | None = Field(default=None, description="Agent concerned, if any")
    language: str
    at: UtcDatetime
    reasons: tuple[str, ...] = Field(default=(), description="Why this priority and choice")
    message_id: str | None = Field(default=None, description="Message that caused the change")
    conversation_id: str | None = None
    state: str = Field(description="Ticket state after the change")
    opened_at: UtcDatetime
    sequence: int = Field(
        ge=1, le=MAX_INT64, description="Per-ticket event number, 1-based, gap-free"
    )
    position: int | None = Field(
        default=None,
        ge=1,
        le=MAX_INT64,
        description="Router-wide event number, gap-free: replaying events by position "
        "reproduces the order in which the router decided",
    )
    conversation_ids: tuple[str, ...] = Field(
        default=(), description="Every conversation linked to the ticket (one case)"
    )
    pool: Literal["general", "supervisor"] = Field(
        default="general", description="Who may take it: any agent, or supervisors only"
    )
    emergency: bool = Field(
        default=False, description="Held in an emergency slot beyond the agent's capacity"
    )
    offer_expires_at: UtcDatetime | None = Field(
        default=None, description="On `offered`: when the offer goes to the next agent"
    )
    possible_urgent: Category | None = Field(
        default=None,
        description="A category the customer's message possibly concerns that raised the "
        "priority above the category's own (a possible theft in a withdrawal question): "
        "the acknowledgement gives that category's safety advice. Cleared when an agent "
        "recategorizes the ticket; a reopening starts from the reopening message's own",
    )
