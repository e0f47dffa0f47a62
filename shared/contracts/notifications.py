"""`support.notifications`: what the customer was (or will be) told, one per cause.

One model for the whole life of a notification; the CloudEvents type says which step:
recorded (stored in the outbox), sent, failed (an attempt failed, it will be retried),
dead (given up; a dead letter with the reason is on `support.deadletter`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.contracts.common import Channel, Contract, UtcDatetime

NOTIFICATION_RECORDED = "omniroute.notification.recorded.v1"
NOTIFICATION_SENT = "omniroute.notification.sent.v1"
NOTIFICATION_FAILED = "omniroute.notification.failed.v1"
NOTIFICATION_DEAD = "omniroute.notification.dead.v1"

NotificationStatus = Literal["recorded", "sent", "failed", "dead"]


def notification_event_type(status: NotificationStatus) -> str:
    return f"omniroute.notification.{status}.v1"


class NotificationRecorded(Contract):
    """A notification to a customer, at one step of its life (`status`)."""

    notification_id: str = Field(description="Deterministic per (ticket, cause)")
    ticket_id: str
    customer_id: str
    channel: Channel
    template: str
    language: str
    status: NotificationStatus
    cause_event_id: str = Field(description="CloudEvents id of the event that caused it")
    at: UtcDatetime
    cause: str | None = Field(
        default=None, description="acknowledgement, agent_assigned:1, incident:<id>:open, ..."
    )
    attempts: int = Field(default=0, ge=0, description="Delivery attempts so far")
    reason: str | None = Field(
        default=None, description="Why an attempt failed or was given up (no personal data)"
    )
    incident_id: str | None = Field(default=None, description="The incident it is about, if any")
