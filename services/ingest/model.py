"""What a parser returns: the provider message before identity, redaction and classification.

Parsers are pure functions `parse_<provider>(raw: bytes, config: ParserConfig) -> ParseResult`.
They never do I/O. A payload that cannot be understood raises `ParseError(reason)`; a
payload that is valid but is not a customer message (an outgoing agent message, a
bounce, a subscribe event, ...) yields `Skipped(reason)`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.common import Category, Channel, Provider
from shared.contracts.messages import Attachment, EmailThread, Identity


class ParseError(ValueError):
    """The payload is malformed; `reason` is short, stable and safe to log (no content)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ParsedMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    channel: Channel
    provider: Provider
    provider_message_id: str = Field(description="Provider's id; with provider, the dedup key")
    conversation_key: str = Field(description="Provider-scoped thread key")
    sent_at: datetime | None = None
    kind: Literal["message", "callback_request"] = "message"
    identities: tuple[Identity, ...] = ()
    sender_name: str | None = None
    subject: str | None = None
    text: str = ""
    attachments: tuple[Attachment, ...] = ()
    locale_hint: str | None = Field(default=None, description="Locale the provider reported")
    callback_number: str | None = None
    category_hint: Category | None = Field(
        default=None, description="A category the channel itself states (an IVR choice)"
    )
    email_thread: EmailThread | None = None


class Skipped(BaseModel):
    model_config = ConfigDict(frozen=True)

    reason: str


ParseResult = list[ParsedMessage | Skipped]


class ParserConfig(BaseModel):
    """Per-deployment facts the parsers need (from settings / policy files)."""

    model_config = ConfigDict(frozen=True)

    own_x_account_ids: frozenset[str] = frozenset()
    own_telegram_bot_ids: frozenset[str] = frozenset()
    own_email_addresses: frozenset[str] = frozenset()
    ivr_digits: dict[str, Category] = Field(default_factory=dict)
    max_text_chars: int = 20_000
