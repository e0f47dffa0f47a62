"""Who wrote: the customer a message belongs to, as ingest knows it. No I/O here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from shared.contracts.customers import CustomerUpdated
from shared.contracts.messages import Identity

# Which identity names a new customer: the strongest one the message carries.
IDENTITY_STRENGTH = (
    "account_uid",
    "email",
    "phone",
    "x",
    "telegram",
    "wechat",
    "chatwoot",
    "chat_visitor",
)


@dataclass(frozen=True)
class CustomerRef:
    customer_id: str
    tier: str = "standard"
    anti_phishing_code: str | None = None
    new: bool = False
    language: str | None = None  # preferred, from the exchange's records
    version: int = 0  # grows with every change of the record (support.customers)
    legal_hold: bool = False


@dataclass(frozen=True)
class CustomerRecord:
    """What an exchange loads through the API or the bulk import."""

    customer_id: str | None
    identities: tuple[Identity, ...]
    tier: str = "standard"
    anti_phishing_code: str | None = None
    language: str | None = None

    def with_id(self, customer_id: str) -> CustomerRecord:
        return replace(self, customer_id=customer_id)


def customer_updated(ref: CustomerRef, now: datetime) -> CustomerUpdated:
    """The customer's current facts, as support.customers carries them (a full record)."""
    return CustomerUpdated(
        customer_id=ref.customer_id,
        tier=ref.tier,
        anti_phishing_code=ref.anti_phishing_code,
        language=ref.language,
        legal_hold=ref.legal_hold,
        version=ref.version,
        at=now,
    )


def primary_identity(identities: Sequence[Identity]) -> Identity:
    return min(identities, key=lambda i: IDENTITY_STRENGTH.index(i.kind))
