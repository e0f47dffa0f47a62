"""What a parser returns: the provider message before identity, redaction and classification.

Parsers are pure functions `parse_<provider>(raw: bytes, config: ParserConfig) -> ParseResult`.
They never do I/O. A payload that cannot be understood raises `ParseError(reason)`; a
payload that is valid but is not a customer message (an outgoing agent message, a
bounce, a subscribe event, ...) yields `Skipped(reason)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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
    language_choice: str | None = Field(
        default=None, description="A language the customer chose (an IVR menu): it decides"
    )
    email_thread: EmailThread | None = None


class Skipped(BaseModel):
    model_config = ConfigDict(frozen=True)

    reason: str


ParseResult = list[ParsedMessage | Skipped]


class MenuChoice(BaseModel):
    """One key of an IVR menu: what pressing it says, and the menu it leads to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    category: Category | None = None
    language: str | None = Field(default=None, pattern=r"^[a-z]{2}$")
    menu: dict[str, MenuChoice] = Field(default_factory=dict)

    @field_validator("menu")
    @classmethod
    def _keys(cls, menu: dict[str, MenuChoice]) -> dict[str, MenuChoice]:
        return _check_keys(menu)


def _check_keys(menu: dict[str, MenuChoice]) -> dict[str, MenuChoice]:
    bad = [k for k in menu if len(k) != 1 or k not in "0123456789*#"]
    if bad:
        raise ValueError(f"menu keys are single keypad keys (0-9, *, #), not {bad}")
    return menu


class IvrChoice(BaseModel):
    model_config = ConfigDict(frozen=True)

    category: Category | None = None
    language: str | None = None


class IvrMenus(BaseModel):
    """Phone menus per line: the number called (E.164) → its top menu; "default" for others."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lines: dict[str, dict[str, MenuChoice]] = Field(default_factory=dict)

    @field_validator("lines")
    @classmethod
    def _lines(cls, lines: dict[str, dict[str, MenuChoice]]) -> dict[str, dict[str, MenuChoice]]:
        for line, menu in lines.items():
            if line != "default" and not (line.startswith("+") and line[1:].isdigit()):
                raise ValueError(f"a line is an E.164 number or 'default', not {line!r}")
            _check_keys(menu)
        return lines

    def choose(self, called: str | None, path: Sequence[str]) -> IvrChoice:
        """What the caller chose: the deepest category and language along the keys pressed."""
        menu = self.lines.get(called or "") or self.lines.get("default") or {}
        category = language = None
        for key in path:
            if len(key) != 1:
                continue  # a step's name ("main", "operator"), not a key pressed
            choice = menu.get(key)
            if choice is None:
                break  # a key the menu does not offer ends the walk
            category = choice.category or category
            language = choice.language or language
            menu = choice.menu
        return IvrChoice(category=category, language=language)


class ParserConfig(BaseModel):
    """Per-deployment facts the parsers need (from settings / policy files)."""

    model_config = ConfigDict(frozen=True)

    own_x_account_ids: frozenset[str] = frozenset()
    own_telegram_bot_ids: frozenset[str] = frozenset()
    own_email_addresses: frozenset[str] = frozenset()
    ivr: IvrMenus = Field(default_factory=IvrMenus)
    max_text_chars: int = 20_000
