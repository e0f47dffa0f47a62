"""`support.notifications`: what the customer was (or will be) told, one per cause."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.contracts.common import Channel, Contract, UtcDatetime

NOTIFICATION_RECORDED = "omniroute.notification.recorded.v1"

NotificationStatus = Literal["recorded", "sent", "failed", "dead"]


class NotificationRecorded(Contract):
    notification_id: str = Field(description="Deterministic per (ticket, cause)")
    ticket_id: str
    customer_id: str
    channel: Channel
    template: str
    language: str
    status: NotificationStatus
    cause_event_id: str = Field(description="CloudEvents id of the event that caused it")
    at: UtcDatetime
