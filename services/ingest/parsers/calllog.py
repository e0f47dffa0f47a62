"""Generic JSON phone call log, one record per finished call (any PBX or call-centre tool).

    {"call_id": "c-8812", "from": "+44 20 7946 0018", "to": "+44 800 123 4567",
     "started_at": "2024-05-01T09:30:00+01:00", "duration_s": 95, "direction": "inbound",
     "ivr_path": ["2", "1"], "disposition": "voicemail",
     "transcript": "My withdrawal is stuck...", "callback_number": "+447700900123"}

Missed, abandoned and voicemail calls are callback requests. The conversation key is
the caller's number, as for Twilio, so repeated calls join one conversation.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from services.ingest.model import ParsedMessage, ParserConfig, ParseResult, Skipped
from services.ingest.parsers.common import (
    Id,
    Shape,
    UtcTime,
    clean_text,
    load_json,
    normalise_phone,
    validate,
)
from shared.contracts.common import Provider
from shared.contracts.messages import Identity

PROVIDER: Provider = "generic"

# Dispositions after which nobody has spoken to the customer yet.
_CALLBACK_DISPOSITIONS = frozenset(
    {"abandoned", "voicemail", "missed", "no_answer", "busy", "failed", "callback_requested"}
)


def _lower(value: object) -> object:
    return value.strip().lower().replace("-", "_") if isinstance(value, str) else value


class _CallLog(Shape):
    call_id: Id
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None
    started_at: UtcTime | None = None
    direction: Annotated[Literal["inbound", "outbound"], BeforeValidator(_lower)] = "inbound"
    ivr_path: tuple[Id, ...] = ()
    disposition: Annotated[str | None, BeforeValidator(_lower)] = None
    transcript: str | None = None
    callback_number: str | None = None


def parse_calllog(raw: bytes, config: ParserConfig) -> ParseResult:
    call = validate(_CallLog, load_json(raw, PROVIDER), PROVIDER)
    if call.direction == "outbound":
        return [Skipped(reason="generic: outbound call")]
    caller = normalise_phone(call.from_)
    callback_number = normalise_phone(call.callback_number) or caller
    text = clean_text(call.transcript or "", config.max_text_chars)

    choice = config.ivr.choose(normalise_phone(call.to), call.ivr_path)
    kind: Literal["message", "callback_request"] = "message"
    if call.disposition in _CALLBACK_DISPOSITIONS and callback_number is not None:
        kind = "callback_request"
    elif not text:
        # Answered calls were handled live; a missed call without a number cannot be returned.
        return [Skipped(reason="generic: call without transcript or callback number")]

    return [
        ParsedMessage(
            channel="phone",
            provider=PROVIDER,
            provider_message_id=call.call_id,
            conversation_key=caller or callback_number or f"call:{call.call_id}",
            sent_at=call.started_at,
            kind=kind,
            identities=(Identity(kind="phone", value=caller),) if caller else (),
            text=text,
            callback_number=callback_number if kind == "callback_request" else None,
            category_hint=choice.category,
            language_choice=choice.language,
        )
    ]
