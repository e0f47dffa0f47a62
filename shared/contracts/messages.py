"""`support.messages`: one common event per customer message, whatever the channel."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import Field

from shared.contracts.common import (
    MAX_INT64,
    Category,
    Channel,
    Contract,
    IdentityKind,
    Provider,
    UtcDatetime,
)

MESSAGE_RECEIVED = "omniroute.message.received.v1"


class Identity(Contract):
    kind: IdentityKind = Field(description="What the value identifies: an email, a phone, ...")
    value: str = Field(description="Normalised identity value (lower-case email, E.164 phone)")


class Attachment(Contract):
    name: str = Field(description="File name as the customer sent it")
    content_type: str = Field(description="MIME type")
    size_bytes: int = Field(
        ge=0, le=MAX_INT64, description="Decoded size; the content is never carried"
    )


class Redaction(Contract):
    kind: Literal["seed_phrase", "private_key", "password", "otp_code"] = Field(
        description="What kind of secret was removed from the text"
    )
    count: int = Field(ge=1, le=MAX_INT64, description="How many of that kind were removed")


class WalletAddress(Contract):
    chain: str = Field(description="btc, eth, tron, sol, ...")
    address: str


class Amount(Contract):
    value: Decimal
    asset: str = Field(description="Ticker, upper case: BTC, USDT, ...")


class Signals(Contract):
    """Facts extracted from the text that agents and routing rules use."""

    tx_hashes: tuple[str, ...] = ()
    addresses: tuple[WalletAddress, ...] = ()
    amounts: tuple[Amount, ...] = ()
    account_uids: tuple[str, ...] = ()
    order_ids: tuple[str, ...] = ()


class EmailThread(Contract):
    """What a reply needs to land in the customer's email thread."""

    message_id: str | None = Field(default=None, description="The inbound Message-ID header")
    references: tuple[str, ...] = Field(default=(), description="References chain, oldest first")
    subject: str | None = None
    reply_to: str | None = Field(default=None, description="Address replies should go to")


class MessageReceived(Contract):
    """A customer message, parsed, redacted, identified and classified by ingest."""

    message_id: str = Field(description="Deterministic: same provider message, same id")
    conversation_id: str = Field(description="Thread key; Kafka key of support.messages")
    channel: Channel
    provider: Provider
    provider_message_id: str = Field(description="The provider's own id for the message")
    kind: Literal["message", "callback_request"] = "message"
    sent_at: UtcDatetime = Field(description="When the customer sent it (provider time)")
    received_at: UtcDatetime = Field(description="When ingest accepted it")
    customer_id: str = Field(description="Resolved customer id (stable per identity)")
    customer_tier: str = Field(default="standard", description="standard, vip1..vip9")
    anti_phishing_code: str | None = Field(
        default=None, description="The customer's anti-phishing code, for replies to show"
    )
    customer_language: str | None = Field(
        default=None, description="The customer's preferred language, if the exchange set one"
    )
    identities: tuple[Identity, ...] = Field(default=(), description="Sender identities seen")
    sender_name: str | None = Field(default=None, description="Display name, if given")
    subject: str | None = None
    text: str = Field(description="Message text with secrets redacted")
    language: str = Field(default="en", description="ISO 639-1 code of the detected language")
    category: Category = "general"
    possible_urgent: Category | None = Field(
        default=None,
        description=(
            "An urgent category (stolen_funds, account_takeover, secret_exposed) likely "
            "enough to route the ticket at its priority although `category`, the likeliest, "
            "is another: safety first raises the priority, it does not relabel the message"
        ),
    )
    signals: Signals = Signals()
    reasons: tuple[str, ...] = Field(default=(), description="Why this category, in short")
    redactions: tuple[Redaction, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    callback_number: str | None = None
    email_thread: EmailThread | None = None
