"""Which parser reads a payload: the registry, and format recognition for payloads
that arrive without the Kafka `provider` header.

Recognition only looks at the envelope (the keys a format always has); the parser
still validates everything, so a payload sniffed wrongly becomes a ParseError, not a
wrong message.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import parse_qsl

from services.ingest.model import ParserConfig, ParseResult
from services.ingest.parsers.calllog import parse_calllog
from services.ingest.parsers.chat_generic import parse_chat_generic
from services.ingest.parsers.chatwoot import parse_chatwoot
from services.ingest.parsers.email import parse_email
from services.ingest.parsers.telegram import parse_telegram
from services.ingest.parsers.twilio import parse_twilio
from services.ingest.parsers.wechat import parse_wechat
from services.ingest.parsers.x import parse_x
from shared.contracts.common import Channel, Provider

Parser = Callable[[bytes, ParserConfig], ParseResult]

PARSERS: dict[tuple[Channel, Provider], Parser] = {
    ("email", "smtp"): parse_email,
    ("social", "x"): parse_x,
    ("social", "telegram"): parse_telegram,
    ("social", "wechat"): parse_wechat,
    ("phone", "twilio"): parse_twilio,
    ("phone", "generic"): parse_calllog,
    ("chat", "chatwoot"): parse_chatwoot,
    ("chat", "generic"): parse_chat_generic,
}

# Account Activity deliveries always carry for_user_id and one *_events list.
_X_KEYS = frozenset({"for_user_id", "direct_message_events", "tweet_create_events"})
_WHITESPACE = b" \t\r\n"
_BOM = b"\xef\xbb\xbf"


def sniff(channel: Channel, raw: bytes) -> Provider | None:
    """The provider whose format `raw` is, or None when no format of `channel` fits."""
    if channel == "email":
        # RFC 5322 has no envelope to recognise, and smtp is the only email provider.
        return "smtp"
    body = raw.removeprefix(_BOM).lstrip(_WHITESPACE)
    if body.startswith(b"<"):
        return "wechat" if channel == "social" and _looks_like_wechat(body) else None
    if not body.startswith(b"{"):
        return "twilio" if channel == "phone" and _has_form_field(body, "CallSid") else None
    payload = _json_object(body)
    if payload is None:
        return None
    if channel == "social":
        if _X_KEYS & payload.keys():
            return "x"
        return "telegram" if "update_id" in payload else None
    if channel == "phone":
        return "generic" if "call_id" in payload else None
    # chat: every Chatwoot webhook names its event; the generic message never does.
    if payload.get("event") == "message_created":
        return "chatwoot"
    if "session_id" in payload:
        return "generic"
    return "chatwoot" if isinstance(payload.get("event"), str) else None


def _looks_like_wechat(body: bytes) -> bool:
    return body.startswith((b"<xml>", b"<?xml")) and b"<ToUserName>" in body


def _has_form_field(body: bytes, name: str) -> bool:
    try:
        return any(key == name for key, _ in parse_qsl(body.decode("ascii"), max_num_fields=200))
    except ValueError:
        return False


def _json_object(body: bytes) -> dict[str, object] | None:
    try:
        payload = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    return payload if isinstance(payload, dict) else None
