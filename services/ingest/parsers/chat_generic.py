"""Generic JSON chat message.

{"session_id": "s-1", "message_id": "m-1", "sent_at": "2024-05-01T12:00:00Z",
 "visitor": {"id": "v-1", "name": "Ann", "email": "Ann@Example.com",
             "account_uid": "10293847", "locale": "zh-CN"},
 "text": "..."}
"""

from __future__ import annotations

from services.ingest.model import ParsedMessage, ParserConfig, ParseResult, Skipped
from services.ingest.parsers.common import (
    Id,
    Shape,
    UtcTime,
    clean_text,
    load_json,
    normalise_email,
    normalise_locale,
    optional_line,
    validate,
)
from shared.contracts.common import Provider
from shared.contracts.messages import Identity

PROVIDER: Provider = "generic"


class _Visitor(Shape):
    id: Id | None = None
    name: str | None = None
    email: str | None = None
    account_uid: Id | None = None
    locale: str | None = None


class _ChatMessage(Shape):
    session_id: Id
    message_id: Id
    sent_at: UtcTime | None = None
    visitor: _Visitor | None = None
    text: str


def parse_chat_generic(raw: bytes, config: ParserConfig) -> ParseResult:
    message = validate(_ChatMessage, load_json(raw, PROVIDER), PROVIDER)
    text = clean_text(message.text, config.max_text_chars)
    if not text:
        return [Skipped(reason="generic: empty message")]
    visitor = message.visitor or _Visitor()
    identities: list[Identity] = []
    if visitor.id is not None:
        identities.append(Identity(kind="chat_visitor", value=visitor.id))
    if email := normalise_email(visitor.email):
        identities.append(Identity(kind="email", value=email))
    if visitor.account_uid is not None:
        identities.append(Identity(kind="account_uid", value=visitor.account_uid))
    return [
        ParsedMessage(
            channel="chat",
            provider=PROVIDER,
            # Widgets number messages per session, so the message id alone may repeat.
            provider_message_id=f"{message.session_id}:{message.message_id}",
            conversation_key=message.session_id,
            sent_at=message.sent_at,
            identities=tuple(identities),
            sender_name=optional_line(visitor.name),
            text=text,
            locale_hint=normalise_locale(visitor.locale),
        )
    ]
