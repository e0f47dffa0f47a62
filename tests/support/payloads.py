"""Inbound payloads of every (channel, provider), shaped like the providers' public docs.

Each shape builds a customer message from a number `n`, which names the conversation
and the sender (use one per conversation), the customer's text, and `seq`, the message's
place in that conversation (0 opens it; 1, 2, ... follow up in the same thread). The
shapes follow the examples in the parser tests (tests/unit/test_parse_*.py).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlencode

from shared.contracts.common import Channel, Provider
from shared.ids import message_id

SUPPORT_EMAIL = "support@exchange.example"
EXCHANGE_X_ID = "4337869213"
WECHAT_ACCOUNT = "gh_3ba4d1e7a2f0"
CREATED = 1_764_000_000  # 2025-11-24T16:00:00Z, unix seconds
X_DM_ID = 954_491_830_116_155_396
X_TWEET_ID = 1_050_118_621_198_921_728
TELEGRAM_USER = 1_000_000
WECHAT_MSG_ID = 24_567_890_123_456_789


class Builder(Protocol):
    def __call__(self, n: int, text: str, *, seq: int = 0) -> bytes: ...


@dataclass(frozen=True)
class Shape:
    name: str
    channel: Channel
    provider: Provider
    build: Builder
    provider_id: Callable[[int, int], str]  # (n, seq) -> the provider's message id

    def provider_message_id(self, n: int, seq: int = 0) -> str:
        return self.provider_id(n, seq)

    def message_id(self, n: int, seq: int = 0) -> str:
        """The id ingest gives this message (what tickets list)."""
        return message_id(self.provider, self.provider_id(n, seq))

    def __str__(self) -> str:
        return self.name


def _nth(base: int, n: int, seq: int) -> str:
    """A numeric provider id: the conversation's first message, or its seq-th follow-up."""
    return str(base + n) if seq == 0 else f"{base + n}{seq:03d}"


def _email(n: int, text: str, seq: int, tag: str, domain: str, charset: str, subject: str) -> bytes:
    if charset == "gbk":
        # As Chinese mail clients send it: 8bit GBK body, GB2312-labelled subject. Characters
        # GBK lacks become "?", as such a client would send them.
        body = text.replace("\r\n", "\n").replace("\n", "\r\n").encode("gbk", "replace") + b"\r\n"
        encoded_subject = f"=?gb2312?B?{base64.b64encode(subject.encode('gbk')).decode()}?="
        transfer = "8bit"
    else:
        # base64 keeps any text intact on the wire (long lines, leading dots, "From ").
        lines = base64.encodebytes(text.encode("utf-8")).decode("ascii")
        body = lines.replace("\n", "\r\n").encode("ascii")
        encoded_subject = f"=?utf-8?B?{base64.b64encode(subject.encode()).decode()}?="
        transfer = "base64"
    root = f"<{tag}-{n}@{domain}>"
    thread = f"In-Reply-To: {root}\r\nReferences: {root}\r\n" if seq else ""
    head = (
        f'From: "Customer {n}" <c{n}@example.com>\r\n'
        f"To: Exchange Support <{SUPPORT_EMAIL}>\r\n"
        f"Subject: {'Re: ' if seq else ''}{encoded_subject}\r\n"
        "Date: Thu, 20 Nov 2026 18:15:00 +0800\r\n"
        f"Message-ID: <{tag}-{_nth(0, n, seq)}@{domain}>\r\n"
        f"{thread}"
        "MIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset={charset}\r\n"
        f"Content-Transfer-Encoding: {transfer}\r\n"
    )
    return head.encode("ascii") + b"\r\n" + body


def email_utf8(n: int, text: str, *, seq: int = 0, subject: str = "Help with my account") -> bytes:
    return _email(n, text, seq, "utf8", "mail.example.com", "utf-8", subject)


def email_gbk(n: int, text: str, *, seq: int = 0, subject: str = "账户问题") -> bytes:
    return _email(n, text, seq, "gbk", "mail.example.cn", "gbk", subject)


def x_dm(n: int, text: str, *, seq: int = 0) -> bytes:
    sender = str(3_000_000_000 + n)
    return _json(
        {
            "for_user_id": EXCHANGE_X_ID,
            "direct_message_events": [
                {
                    "type": "message_create",
                    "id": _nth(X_DM_ID, n, seq),
                    "created_timestamp": str((CREATED + seq) * 1000),
                    "message_create": {
                        "target": {"recipient_id": EXCHANGE_X_ID},
                        "sender_id": sender,
                        "source_app_id": "13090192",
                        "message_data": {"text": text, "entities": {"urls": []}},
                    },
                }
            ],
            "users": {
                sender: {"id": sender, "name": f"Customer {n}", "screen_name": f"cust{n}"},
                EXCHANGE_X_ID: {"id": EXCHANGE_X_ID, "name": "Exchange", "screen_name": "xsup"},
            },
        }
    )


def x_mention(n: int, text: str, *, seq: int = 0) -> bytes:
    # A follow-up replies to the first tweet, which roots the conversation.
    return _json(
        {
            "for_user_id": EXCHANGE_X_ID,
            "tweet_create_events": [
                {
                    "created_at": "Wed Oct 10 20:19:24 +0000 2018",
                    "id_str": _nth(X_TWEET_ID, n, seq),
                    "text": f"@xsup {text}",
                    "in_reply_to_status_id_str": _nth(X_TWEET_ID, n, 0) if seq else None,
                    "user": {
                        "id_str": str(6_000_000 + n),
                        "name": f"Customer {n}",
                        "screen_name": f"cust{n}",
                    },
                    "timestamp_ms": str((CREATED + seq) * 1000),
                    "is_quote_status": False,
                }
            ],
        }
    )


def telegram(n: int, text: str, *, seq: int = 0) -> bytes:
    user = TELEGRAM_USER + n
    return _json(
        {
            "update_id": 873_450_000 + n + seq,
            "message": {
                "message_id": seq + 1,
                "from": {"id": user, "is_bot": False, "first_name": "Wei", "language_code": "zh"},
                "chat": {"id": user, "first_name": "Wei", "type": "private"},
                "date": CREATED + seq,
                "text": text,
            },
        }
    )


def _xml_char(c: str) -> bool:
    # XML 1.0 `Char`: no C0 controls but tab and line ends, no U+FFFE/U+FFFF.
    return (
        c in "\t\n\r" or "\x20" <= c <= "\ud7ff" or "\ue000" <= c <= "\ufffd" or c >= "\U00010000"
    )


def _cdata(text: str) -> str:
    # WeChat never sends what XML cannot carry; "]]>" would end the CDATA section.
    allowed = "".join(c for c in text if _xml_char(c))
    return "<![CDATA[" + allowed.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def _wechat(n: int, seq: int, msg_type: str, fields: str) -> bytes:
    return (
        f"<xml><ToUserName>{_cdata(WECHAT_ACCOUNT)}</ToUserName>"
        f"<FromUserName>{_cdata(f'oUpF8uMuAJO_M2pxb1Q9z{n}')}</FromUserName>"
        f"<CreateTime>{CREATED + seq}</CreateTime><MsgType>{_cdata(msg_type)}</MsgType>"
        f"{fields}<MsgId>{_nth(WECHAT_MSG_ID, n, seq)}</MsgId></xml>"
    ).encode()


def wechat_text(n: int, text: str, *, seq: int = 0) -> bytes:
    return _wechat(n, seq, "text", f"<Content>{_cdata(text)}</Content>")


def wechat_voice(n: int, text: str, *, seq: int = 0) -> bytes:
    return _wechat(
        n,
        seq,
        "voice",
        f"<MediaId>{_cdata(f'media-{n}-{seq}')}</MediaId><Format>{_cdata('amr')}</Format>"
        f"<Recognition>{_cdata(text)}</Recognition>",
    )


def _sid(n: int, seq: int) -> str:
    return f"{n * 1000 + seq:032x}"[-32:]


def twilio_transcription(n: int, text: str, *, seq: int = 0) -> bytes:
    # A voicemail per call; the caller's number is the conversation.
    sid = _sid(n, seq)
    return urlencode(
        {
            "AccountSid": "AC2e1f0d3c4b5a69788796a5b4c3d2e1f0",
            "ApiVersion": "2010-04-01",
            "CallSid": f"CA{sid}",
            "CallStatus": "completed",
            "Direction": "inbound",
            "From": f"+86{n % 10**12:012d}",
            "To": "+18005550199",
            "RecordingSid": f"RE{sid}",
            "RecordingUrl": f"https://api.twilio.com/2010-04-01/Accounts/AC2e/Recordings/RE{sid}",
            "TranscriptionSid": f"TR{sid}",
            "TranscriptionStatus": "completed",
            "TranscriptionText": text,
            "TranscriptionType": "fast",
        }
    ).encode("ascii")


def call_log(n: int, text: str, *, seq: int = 0) -> bytes:
    # An answered call with its transcript; the caller's number is the conversation.
    return _json(
        {
            "call_id": f"c-{_nth(0, n, seq)}",
            "from": f"+44 20 {n % 10**8:08d}",
            "to": "+44 800 123 4567",
            "started_at": "2026-11-20T09:30:00+01:00",
            "duration_s": 95,
            "direction": "inbound",
            "ivr_path": ["9"],
            "disposition": "answered",
            "transcript": text,
            "callback_number": None,
        }
    )


def chatwoot(n: int, text: str, *, seq: int = 0) -> bytes:
    return _json(
        {
            "event": "message_created",
            "id": int(_nth(0, n, seq)),
            "content": text,
            "created_at": "2026-11-20T10:00:00.000Z",
            "message_type": "incoming",
            "content_type": "text",
            "private": False,
            "sender": {
                "id": 100_000 + n,
                "name": f"Customer {n}",
                "email": f"cw{n}@example.com",
                "type": "contact",
            },
            "conversation": {
                "id": 200_000 + n,
                "inbox_id": 3,
                "additional_attributes": {"browser_language": "en"},
            },
            "inbox": {"id": 3, "name": "Website"},
            "account": {"id": 1, "name": "Exchange"},
            "attachments": [],
        }
    )


def chat_generic(n: int, text: str, *, seq: int = 0) -> bytes:
    return _json(
        {
            "session_id": f"s-{n}",
            "message_id": f"m-{seq + 1}",
            "sent_at": "2026-11-20T12:00:00Z",
            "visitor": {"id": f"v-{n}", "name": f"Customer {n}", "locale": "en-US"},
            "text": text,
        }
    )


def _json(payload: object) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


SHAPES: tuple[Shape, ...] = (
    Shape(
        "email", "email", "smtp", email_utf8, lambda n, s: f"utf8-{_nth(0, n, s)}@mail.example.com"
    ),
    Shape(
        "email-gbk", "email", "smtp", email_gbk, lambda n, s: f"gbk-{_nth(0, n, s)}@mail.example.cn"
    ),
    Shape("x-dm", "social", "x", x_dm, lambda n, s: f"dm:{_nth(X_DM_ID, n, s)}"),
    Shape("x-mention", "social", "x", x_mention, lambda n, s: f"tweet:{_nth(X_TWEET_ID, n, s)}"),
    Shape("telegram", "social", "telegram", telegram, lambda n, s: f"{TELEGRAM_USER + n}:{s + 1}"),
    Shape("wechat-text", "social", "wechat", wechat_text, lambda n, s: _nth(WECHAT_MSG_ID, n, s)),
    Shape("wechat-voice", "social", "wechat", wechat_voice, lambda n, s: _nth(WECHAT_MSG_ID, n, s)),
    Shape(
        "twilio-transcription",
        "phone",
        "twilio",
        twilio_transcription,
        lambda n, s: f"CA{_sid(n, s)}:transcription:RE{_sid(n, s)}",
    ),
    Shape("call-log", "phone", "generic", call_log, lambda n, s: f"c-{_nth(0, n, s)}"),
    Shape("chatwoot", "chat", "chatwoot", chatwoot, lambda n, s: _nth(0, n, s)),
    Shape("chat", "chat", "generic", chat_generic, lambda n, s: f"s-{n}:m-{s + 1}"),
)
SHAPES_BY_NAME = {s.name: s for s in SHAPES}
