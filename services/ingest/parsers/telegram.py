"""Telegram Bot API `Update` JSON (webhook body or one `getUpdates` result).

    {"update_id": 1001,
     "message": {"message_id": 7, "date": 1714564800, "text": "...",
                 "from": {"id": 42, "is_bot": false, "first_name": "Li",
                          "language_code": "zh-hans"},
                 "chat": {"id": 42, "type": "private"}}}

Only private chats are support conversations: in a group the bot overhears people
talking to each other, and answering there would put account details in public.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictBool, StrictInt

from services.ingest.model import ParsedMessage, ParseError, ParserConfig, ParseResult, Skipped
from services.ingest.parsers.common import (
    Shape,
    UtcTime,
    clean_line,
    clean_text,
    load_json,
    normalise_locale,
    optional_line,
    validate,
)
from shared.contracts.common import Provider
from shared.contracts.messages import Attachment, Identity

PROVIDER: Provider = "telegram"

# Telegram ids fit in 52 bits; anything beyond 64 is not an id.
TelegramId = Annotated[StrictInt, Field(ge=-(2**63), le=2**63)]
Size = Annotated[StrictInt, Field(ge=0, le=2**63)]


class _User(Shape):
    id: TelegramId
    is_bot: StrictBool = False
    first_name: str = ""
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = None


class _Chat(Shape):
    id: TelegramId
    type: str


class _File(Shape):
    file_name: str | None = None
    mime_type: str | None = None
    file_size: Size | None = None


class _PhotoSize(Shape):
    file_size: Size | None = None
    width: Size = 0
    height: Size = 0


class _Message(Shape):
    message_id: TelegramId
    from_: _User | None = Field(default=None, alias="from")
    chat: _Chat
    date: UtcTime
    edit_date: UtcTime | None = None
    text: str | None = None
    caption: str | None = None
    photo: list[_PhotoSize] | None = None
    document: _File | None = None
    video: _File | None = None
    audio: _File | None = None
    voice: _File | None = None


class _Update(Shape):
    update_id: TelegramId
    message: _Message | None = None
    edited_message: _Message | None = None


def parse_telegram(raw: bytes, config: ParserConfig) -> ParseResult:
    update = validate(_Update, load_json(raw, PROVIDER), PROVIDER)
    message = update.message or update.edited_message
    if message is None:
        return [Skipped(reason="telegram: not a message update")]
    sender = message.from_
    if sender is None:
        return [Skipped(reason="telegram: no sender")]
    if sender.is_bot or str(sender.id) in config.own_telegram_bot_ids:
        return [Skipped(reason="telegram: bot sender")]
    if message.chat.type != "private":
        return [Skipped(reason="telegram: not a private chat")]

    text = clean_text(message.text or message.caption or "", config.max_text_chars)
    attachments = _attachments(message)
    if not text and not attachments:
        return [Skipped(reason="telegram: no text or file")]

    provider_message_id = f"{message.chat.id}:{message.message_id}"
    sent_at = message.date
    if update.message is None:
        # An edit is a new message for us; its edit_date keeps redeliveries identical.
        if message.edit_date is None:
            raise ParseError("telegram: edited message without edit_date")
        provider_message_id += f":edit:{int(message.edit_date.timestamp())}"
        sent_at = message.edit_date

    name = " ".join(part for part in (sender.first_name, sender.last_name) if part)
    return [
        ParsedMessage(
            channel="social",
            provider=PROVIDER,
            provider_message_id=provider_message_id,
            conversation_key=str(message.chat.id),
            sent_at=sent_at,
            identities=(Identity(kind="telegram", value=str(sender.id)),),
            sender_name=optional_line(name) or optional_line(sender.username),
            text=text,
            attachments=attachments,
            locale_hint=normalise_locale(sender.language_code),
        )
    ]


def _attachments(message: _Message) -> tuple[Attachment, ...]:
    found: list[Attachment] = []
    if message.photo:
        # One entry per resolution of the same picture; the largest is the original, and
        # Telegram re-encodes every photo as JPEG.
        largest = max(message.photo, key=lambda size: size.width * size.height)
        found.append(
            Attachment(
                name="photo.jpg", content_type="image/jpeg", size_bytes=largest.file_size or 0
            )
        )
    files = (
        (message.document, "document", "application/octet-stream"),
        (message.video, "video.mp4", "video/mp4"),
        (message.audio, "audio.mp3", "audio/mpeg"),
        (message.voice, "voice.ogg", "audio/ogg"),
    )
    for file, default_name, default_type in files:
        if file is None:
            continue
        found.append(
            Attachment(
                name=clean_line(file.file_name or "") or default_name,
                content_type=clean_line(file.mime_type or "") or default_type,
                size_bytes=file.file_size or 0,
            )
        )
    return tuple(found)
