"""`support.sla`: SLA timers starting, warning, breaching and being met."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.contracts.common import MAX_INT64, Channel, Contract, Priority, UtcDatetime

SlaMetric = Literal["first_response", "next_response", "resolution"]
SlaEventName = Literal[
    "started", "warning", "breached", "met", "paused", "resumed", "cancelled", "retargeted"
]


def sla_event_type(event: SlaEventName) -> str:
    return f"omniroute.sla.{event}.v1"


class SlaEvent(Contract):
    """One step of an SLA timer (a ticket's first response, next response or resolution)."""

    timer_id: str
    ticket_id: str
    event: SlaEventName
    metric: SlaMetric
    due_at: UtcDatetime = Field(description="When the target is (or was) due")
    elapsed_s: float = Field(
        ge=0, description="Business seconds counted when emitted (paused time excluded)"
    )
    target_s: float = Field(gt=0, description="Target in business seconds")
    priority: Priority
    channel: Channel
    agent_id: str | None = None
    customer_id: str
    at: UtcDatetime = Field(description="When the SLA service emitted the event")
    # Added compatibly (defaults keep older events valid):
    threshold_at: UtcDatetime | None = Field(
        default=None,
        description="warning: when the warning threshold was reached; breached: the due time",
    )
    warn_at: UtcDatetime | None = Field(default=None, description="When the warning is due")
    achieved_s: float | None = Field(
        default=None, ge=0, description="met: business seconds it took to meet the target"
    )
    breached: bool = Field(default=False, description="The target was missed before this event")
    customer_tier: str = "standard"
    policy: str = Field(default="default", description="The sla.yaml rule that set the target")
    calendar: str | None = Field(default=None, description="Business calendar; none: 24/7")
    ticket_sequence: int | None = Field(
        default=None,
        le=MAX_INT64,
        description="The ticket event that caused it; none for warnings and breaches",
    )
