"""Which agent actions a ticket takes, and what became of each one. No I/O here.

One rule for both places that decide: the API refuses at once what the stored ticket
already rules out (HTTP 404/409 with the reason), and the engine, which alone sees the
current state, rejects what slipped through (a race, or a desk tool publishing straight
to `support.agents`) with an `action_rejected` ticket event and a recorded outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

HOLDS_CAPACITY = frozenset({"offered", "assigned", "waiting_on_customer"})
OutcomeStatus = Literal["accepted", "rejected"]


@dataclass(frozen=True)
class Refusal:
    kind: Literal["not_found", "conflict"]
    reason: str  # a fixed text: shown to the caller, kept in the audit record and the event


def refusal(state: str | None, holder: str | None, action: str, actor: str) -> Refusal | None:
    """Why `actor` may not take `action` on a ticket in `state` held by `holder`, or None.

    `state` None: no such ticket. Taking again what is already done (accept of accepted
    work, wait while waiting) is not refused: desk tools retry.
    """
    if state is None:
        return Refusal("not_found", "ticket not found")
    if action == "recategorize":
        return None  # any agent may correct a category, even after the ticket is resolved
    if state == "resolved":
        return Refusal("conflict", "ticket already resolved")
    if state not in HOLDS_CAPACITY or holder is None:
        return Refusal("conflict", "ticket is waiting in the queue: offered to no agent")
    if holder != actor:
        return Refusal("conflict", "not the assignee: the ticket is with another agent")
    if action == "decline" and state != "offered":
        return Refusal("conflict", "accepted work cannot be declined")
    return None


@dataclass(frozen=True)
class ActionOutcome:
    """What the engine made of one `AgentActionTaken` (kept with the applied event id)."""

    status: OutcomeStatus
    ticket_id: str
    agent_id: str
    action: str
    at: datetime
    reason: str | None = None

    def doc(self) -> dict[str, Any]:
        return {
            "kind": "action",
            "status": self.status,
            "ticket_id": self.ticket_id,
            "agent_id": self.agent_id,
            "action": self.action,
            "at": self.at,
            "reason": self.reason,
        }
