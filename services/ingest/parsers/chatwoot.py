"""Chatwoot webhook JSON; only `message_created` from a contact is a customer message.

{"event": "message_created", "id": 5021, "content": "...", "message_type": "incoming",
 "created_at": "2024-05-01T10:00:00.000Z", "private": false,
 "sender": {"id": 88, "name": "Ann", "email": "ann@example.com",
            "phone_number": "+14155550100", "type": "contact"},
 "conversation": {"id": 17, "additional_attributes": {"browser_language": "en"}},
 "inbox": {"id": 3, "name": "Website"}, "account": {"id": 1, "name": "Exchange"},
 "attachments": [{"file_type": "image", "data_url": "https://.../shot.png", "file_size": 1}]}
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import unquote

from pydantic import BeforeValidator, Field, StrictBool, StrictInt

from services.ingest.model import ParsedMessage, ParseError, ParserConfig, ParseResult, Skipped
from services.ingest.parsers.common import (
    Id,
    Shape,
    UtcTime,
    clean_line,
    clean_text,
    load_json,
    normalise_email,
    normalise_locale,
    normalise_phone,
    optional_line,
    validate,
)
from shared.contracts.common import Provider
from shared.contracts.messages import Attachment, Identity

PROVIDER: Provider = "chatwoot"

# Chatwoot serialises the enum as its name in webhooks and as its value in some APIs.
_MESSAGE_TYPES: dict[str | int, str] = {
    "incoming": "incoming",
    "outgoing": "outgoing",
    "activity": "activity",
    "template": "template",
    0: "incoming",
    1: "outgoing",
    2: "activity",
    3: "template",
}
_FILE_TYPES = {"image": "image/*", "audio": "audio/*", "video": "video/*"}


def _only_str(value: object) -> object:
    # Fields we merely peek at must not make a whole message unreadable.
    return value if isinstance(value, str) else None


def _only_dict(value: object) -> object:
    return value if isinstance(value, dict) else None


def _message_type(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("message_type is a string or an integer")
    return _MESSAGE_TYPES.get(value, "unknown")


class _Sender(Shape):
    id: Id
    name: str | None = None
    email: str | None = None
    phone_number: str | None = None
    type: str | None = None


class _ConversationAttributes(Shape):
    browser_language: Annotated[str | None, BeforeValidator(_only_str)] = None


class _Conversation(Shape):
    id: Id
    additional_attributes: Annotated[
        _ConversationAttributes | None, BeforeValidator(_only_dict)
    ] = None


class _Account(Shape):
    id: Id


class _Attachment(Shape):
    file_type: str = "file"
    data_url: str | None = None
    file_size: Annotated[StrictInt, Field(ge=0, le=2**63)] | None = None


class _Event(Shape):
    event: str


class _MessageCreated(Shape):
    id: Id
    content: str | None = None
    message_type: Annotated[str, BeforeValidator(_message_type)]
    created_at: UtcTime | None = None
    private: StrictBool = False
    sender: _Sender | None = None
    conversation: _Conversation
    account: _Account | None = None
    attachments: tuple[_Attachment, ...] = ()


def parse_chatwoot(raw: bytes, config: ParserConfig) -> ParseResult:
    payload = load_json(raw, PROVIDER)
    if validate(_Event, payload, PROVIDER).event != "message_created":
        return [Skipped(reason="chatwoot: not message_created")]
    message = validate(_MessageCreated, payload, PROVIDER)
    # Private notes are agents talking to each other; never route them as customer text.
    if message.private:
        return [Skipped(reason="chatwoot: private note")]
    if message.message_type != "incoming":
        return [Skipped(reason=f"chatwoot: {message.message_type} message")]
    sender = message.sender
    if sender is None:
        raise ParseError("chatwoot: missing sender")
    if sender.type not in (None, "contact"):
        return [Skipped(reason="chatwoot: not from a contact")]

    text = clean_text(message.content or "", config.max_text_chars)
    attachments = tuple(_attachment(item) for item in message.attachments)
    if not text and not attachments:
        return [Skipped(reason="chatwoot: empty message")]

    identities = [Identity(kind="chatwoot", value=sender.id)]
    if email := normalise_email(sender.email):
        identities.append(Identity(kind="email", value=email))
    if phone := normalise_phone(sender.phone_number):
        identities.append(Identity(kind="phone", value=phone))
    conversation = message.conversation
    attributes = conversation.additional_attributes or _ConversationAttributes()
    return [
        ParsedMessage(
            channel="chat",
            provider=PROVIDER,
            provider_message_id=message.id,
            # Webhooks carry the conversation's display id, which is only unique per account.
            conversation_key=(
                f"{message.account.id}:{conversation.id}" if message.account else conversation.id
            ),
            sent_at=message.created_at,
            identities=tuple(identities),
            sender_name=optional_line(sender.name),
            text=text,
            attachments=attachments,
            locale_hint=normalise_locale(attributes.browser_language),
        )
    ]


def _attachment(item: _Attachment) -> Attachment:
    # Chatwoot sends no file name; the storage URL's path ends with it.
    path = (item.data_url or "").split("?", 1)[0].split("#", 1)[0]
    name = clean_line(unquote(path.rsplit("/", 1)[-1], errors="replace"))
    return Attachment(
        name=name or item.file_type,
        content_type=_FILE_TYPES.get(item.file_type, "application/octet-stream"),
        size_bytes=item.file_size or 0,
    )
