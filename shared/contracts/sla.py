"""`support.sla`: SLA timers starting, warning, breaching and being met."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.contracts.common import Channel, Contract, Priority, UtcDatetime

SlaMetric = Literal["first_response", "next_response", "resolution"]
SlaEventName = Literal["started", "warning", "breached", "met", "paused", "resumed", "cancelled"]


def sla_event_type(event: SlaEventName) -> str:
    return f"omniroute.sla.{event}.v1"


class SlaEvent(Contract):
    timer_id: str
    ticket_id: str
    event: SlaEventName
    metric: SlaMetric
    due_at: UtcDatetime
    elapsed_s: float = Field(ge=0, description="Business seconds elapsed when emitted")
    target_s: float = Field(gt=0)
    priority: Priority
    channel: Channel
    agent_id: str | None = None
    customer_id: str
    at: UtcDatetime
