"""Vocabulary shared by every contract: channels, providers, categories, priorities."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict

Channel = Literal["email", "social", "phone", "chat"]
CHANNELS: tuple[Channel, ...] = ("email", "social", "phone", "chat")

Provider = Literal["smtp", "x", "telegram", "wechat", "twilio", "chatwoot", "generic"]
PROVIDERS_BY_CHANNEL: dict[Channel, tuple[Provider, ...]] = {
    "email": ("smtp",),
    "social": ("x", "telegram", "wechat"),
    "phone": ("twilio", "generic"),
    "chat": ("chatwoot", "generic"),
}

Category = Literal[
    "stolen_funds",
    "account_takeover",
    "secret_exposed",
    "withdrawal",
    "deposit",
    "login_2fa",
    "kyc",
    "scam_report",
    "trading",
    "general",
]
CATEGORIES: tuple[Category, ...] = (
    "stolen_funds",
    "account_takeover",
    "secret_exposed",
    "withdrawal",
    "deposit",
    "login_2fa",
    "kyc",
    "scam_report",
    "trading",
    "general",
)

Priority = Literal["P1", "P2", "P3", "P4"]

IdentityKind = Literal[
    "email", "phone", "x", "telegram", "wechat", "chatwoot", "chat_visitor", "account_uid"
]


def _require_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamps must carry a time zone")
    return value.astimezone(UTC)


# Every integer on the wire fits in 64 signed bits, as MongoDB and most Kafka clients
# store it: a larger one would be stored by nobody and stall the consumer that tried.
MAX_INT64 = 2**63 - 1

# Every timestamp on the wire is time-zone aware and normalised to UTC.
UtcDatetime = Annotated[datetime, AfterValidator(_require_utc)]


class Contract(BaseModel):
    """Base of every wire model: immutable, unknown fields ignored (forward compatible).

    Numbers are JSON's (RFC 8259): no Infinity or NaN, which Python's parsers accept and
    no arithmetic downstream survives.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)
