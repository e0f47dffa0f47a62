"""`support.erasures`: a customer's erasure, requested by ingest and completed by each service.

Ingest takes `POST /v1/erasures`, resolves the customer and publishes `requested`; every
service (ingest itself, router, sla, notify) erases or anonymises its own records of that
customer and publishes `completed` with what it removed, which ingest folds into the
erasure log behind `GET /v1/erasures/{id}`. A legal hold (`PUT /v1/customers/{id}/hold`)
travels on the same topic, so every service's retention sweeper skips held customers.

No event here carries an identity or a text: the customer is named by its id only.
"""

from __future__ import annotations

from pydantic import Field

from shared.contracts.common import MAX_INT64, Contract, UtcDatetime

ERASURE_REQUESTED = "omniroute.erasure.requested.v1"
ERASURE_COMPLETED = "omniroute.erasure.completed.v1"
LEGAL_HOLD_CHANGED = "omniroute.erasure.hold_changed.v1"
ERASURE_TYPES = (ERASURE_REQUESTED, ERASURE_COMPLETED, LEGAL_HOLD_CHANGED)


class ErasureRequested(Contract):
    """Erase or anonymise every record of one customer (Kafka key: the customer id)."""

    erasure_id: str = Field(description="Returned by POST /v1/erasures; names the request")
    customer_id: str = Field(description="The customer to erase, resolved by ingest")
    reason: str = Field(max_length=200, description="Why, as the requester gave it")
    requested_by: str = Field(description="The credential that asked (key id or JWT subject)")
    at: UtcDatetime = Field(description="When ingest accepted the request")


class ErasureCompleted(Contract):
    """One service's part of an erasure is done (Kafka key: the erasure id)."""

    erasure_id: str
    service: str = Field(description="ingest, router, sla or notify")
    counts: dict[str, int] = Field(
        default_factory=dict,
        description="Records erased or anonymised, per collection",
    )
    held: bool = Field(default=False, description="The customer is under legal hold: nothing done")
    at: UtcDatetime


class LegalHoldChanged(Contract):
    """A customer was placed under legal hold or released (Kafka key: the customer id)."""

    customer_id: str
    hold: bool = Field(description="True: retention and erasure skip the customer")
    reason: str = Field(default="", max_length=200)
    version: int = Field(ge=0, le=MAX_INT64, description="Grows with every change")
    at: UtcDatetime


ErasureEvent = ErasureRequested | ErasureCompleted | LegalHoldChanged
