"""Twilio Programmable Voice webhooks (application/x-www-form-urlencoded).

    CallSid=CA5f...&AccountSid=AC2e...&From=%2B14155550100&To=%2B18005550199
    &CallStatus=in-progress&Direction=inbound&Digits=2

One call produces several webhooks (the call, each <Gather>, the transcription, the
status callback), so `provider_message_id` is `<CallSid>:<stage>` and a redelivery
of the same stage gets the same id. The conversation key is the caller's number, so
a customer who calls again about the same problem lands in the same conversation, as
on Telegram and X; a caller with no caller id falls back to `call:<CallSid>`.

A voicemail is taken from the transcription callback (completed or failed), not the
<Record> action, so one voicemail makes one callback request.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal
from urllib.parse import parse_qsl

from pydantic import Field

from services.ingest.model import ParsedMessage, ParseError, ParserConfig, ParseResult, Skipped
from services.ingest.parsers.common import (
    Id,
    Shape,
    clean_text,
    normalise_phone,
    optional_line,
    validate,
)
from shared.contracts.common import Provider
from shared.contracts.messages import Identity

PROVIDER: Provider = "twilio"

# What Twilio puts in From when the caller hides the number: ANONYMOUS, RESTRICTED,
# BLOCKED, UNKNOWN and UNAVAILABLE spelled on a phone keypad.
_NO_CALLER_ID = frozenset({"+266696687", "+7378742833", "+2562533", "+8656696", "+86282452253"})
_MISSED_STATUSES = frozenset({"no-answer", "busy", "failed", "canceled"})
_LIVE_STATUSES = frozenset({"queued", "initiated", "ringing", "in-progress"})
# <Enqueue> action: the caller hung up while waiting, or the queue was full.
_ABANDONED_QUEUE = frozenset({"hangup", "queue-full"})
_DIGITS = re.compile(r"[0-9*#]{1,32}", re.ASCII)
_MAX_FIELDS = 200
_SID = r"^[A-Za-z0-9]+$"


class _Webhook(Shape):
    # SIDs are alphanumeric; anything else could forge another stage's id ("CA1:status:busy").
    call_sid: Id = Field(alias="CallSid", pattern=_SID)
    from_: str | None = Field(default=None, alias="From")
    called: str | None = Field(default=None, alias="Called")
    to: str | None = Field(default=None, alias="To")
    caller_name: str | None = Field(default=None, alias="CallerName")
    call_status: str | None = Field(default=None, alias="CallStatus")
    direction: str = Field(default="inbound", alias="Direction")
    digits: str | None = Field(default=None, alias="Digits")
    speech_result: str | None = Field(default=None, alias="SpeechResult")
    transcription_status: str | None = Field(default=None, alias="TranscriptionStatus")
    transcription_text: str | None = Field(default=None, alias="TranscriptionText")
    recording_sid: Id | None = Field(default=None, alias="RecordingSid", pattern=_SID)
    recording_url: str | None = Field(default=None, alias="RecordingUrl")
    queue_result: str | None = Field(default=None, alias="QueueResult")
    timestamp: str | None = Field(default=None, alias="Timestamp")


def parse_twilio(raw: bytes, config: ParserConfig) -> ParseResult:
    hook = validate(_Webhook, _form(raw), PROVIDER)
    sent_at = _timestamp(hook.timestamp)
    if hook.direction.startswith("outbound"):
        return [Skipped(reason="twilio: outbound call")]
    number = normalise_phone(hook.from_)
    if number in _NO_CALLER_ID:
        number = None

    digits = None if hook.digits in (None, "", "hangup") else hook.digits
    if digits is not None and not _DIGITS.fullmatch(digits):
        raise ParseError("twilio: invalid Digits")
    speech = clean_text(hook.speech_result or "", config.max_text_chars)
    transcription = clean_text(hook.transcription_text or "", config.max_text_chars)

    kind: Literal["message", "callback_request"]
    if hook.transcription_status is not None or transcription:
        stage = f"transcription:{hook.recording_sid}" if hook.recording_sid else "transcription"
        kind, text = "callback_request", transcription
    elif digits is not None or speech:
        # The same <Gather> redelivered has the same input; a different answer is new.
        stage = f"digits:{digits}" if digits else f"speech:{_digest(speech)}"
        kind, text = "message", speech
    elif hook.recording_url:
        return [Skipped(reason="twilio: recording awaiting transcription")]
    elif hook.queue_result in _ABANDONED_QUEUE:
        stage, kind, text = f"queue:{hook.queue_result}", "callback_request", ""
    elif hook.call_status in _MISSED_STATUSES:
        stage, kind, text = f"status:{hook.call_status}", "callback_request", ""
    elif hook.call_status == "completed":
        return [Skipped(reason="twilio: call completed")]
    elif hook.call_status in _LIVE_STATUSES:
        return [Skipped(reason="twilio: call in progress")]
    elif hook.call_status is None:
        raise ParseError("twilio: missing CallStatus")
    else:
        return [Skipped(reason="twilio: unsupported call status")]

    # Digits of a multi-level menu arrive as one string ("21": 2, then 1).
    choice = config.ivr.choose(normalise_phone(hook.called or hook.to), tuple(digits or ""))
    if kind == "callback_request" and number is None:
        # Nobody to call back; a transcribed voicemail is still worth reading.
        if not text:
            return [Skipped(reason="twilio: missed call without caller id")]
        kind = "message"
    return [
        ParsedMessage(
            channel="phone",
            provider=PROVIDER,
            provider_message_id=f"{hook.call_sid}:{stage}",
            conversation_key=number or f"call:{hook.call_sid}",
            sent_at=sent_at,
            kind=kind,
            identities=(Identity(kind="phone", value=number),) if number else (),
            sender_name=optional_line(hook.caller_name),
            text=text,
            callback_number=number if kind == "callback_request" else None,
            category_hint=choice.category,
            language_choice=choice.language,
        )
    ]


def _form(raw: bytes) -> dict[str, str]:
    try:
        pairs = parse_qsl(
            raw.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=_MAX_FIELDS,
        )
    # UnicodeDecodeError is a ValueError: non-ASCII body or a bad %-escape.
    except ValueError as exc:
        raise ParseError("twilio: invalid form body") from exc
    fields = dict(pairs)
    if len(fields) != len(pairs):
        # Twilio never repeats a field; a repeat is parameter pollution.
        raise ParseError("twilio: duplicate field")
    return fields


def _timestamp(value: str | None) -> datetime | None:
    # Status callbacks carry an RFC 2822 Timestamp; the other webhooks carry none.
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
        # "-0000" means "zone unknown" in RFC 2822 and parses naive; Twilio means UTC.
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (TypeError, ValueError, IndexError, OverflowError) as exc:
        raise ParseError("twilio: invalid Timestamp") from exc


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
