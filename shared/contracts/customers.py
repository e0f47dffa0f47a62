"""`support.customers`: what an exchange knows about a customer, for the services that
need it (compacted, keyed by customer id: the latest record per customer is kept).

Ingest owns customers and publishes one record whenever it learns or changes one (a new
identity seen, `PUT /v1/customers/{id}`, `omniroute customers import`). Notify keeps its
own copy of what it needs to write to the customer (tier, anti-phishing code, preferred
language). After an erasure ingest publishes a tombstone (a record with no value) for the
customer, so compaction drops every earlier record.
"""

from __future__ import annotations

from pydantic import Field

from shared.contracts.common import MAX_INT64, Contract, UtcDatetime

CUSTOMER_UPDATED = "omniroute.customer.updated.v1"


class CustomerUpdated(Contract):
    """The current facts about one customer (a full record, not a change)."""

    customer_id: str = Field(description="Kafka key of support.customers")
    tier: str = Field(default="standard", description="standard, vip1..vip9")
    anti_phishing_code: str | None = Field(
        default=None,
        description="The code the customer set: every message from the exchange shows it",
    )
    language: str | None = Field(default=None, description="Preferred language (ISO 639-1)")
    legal_hold: bool = Field(default=False, description="Retention and erasure skip the customer")
    version: int = Field(
        ge=0, le=MAX_INT64, description="Grows with every change: a consumer keeps the highest"
    )
    at: UtcDatetime = Field(description="When ingest recorded the change")
