"""Inbound payloads of every (channel, provider), shaped like the providers' public docs.

Each shape builds one customer message from a number (unique per message: it becomes
the provider's ids and the sender) and the customer's text. The shapes follow the
examples in the parser tests (tests/unit/test_parse_*.py).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Shape:
    name: str
    channel: Channel
    provider: Provider
    build: Callable[[int, str], bytes]
    provider_message_id: Callable[[int], str]

    def message_id(self, n: int) -> str:
        """The id ingest gives message `n` of this shape (what tickets list)."""
        return message_id(self.provider, self.provider_message_id(n))

    def __str__(self) -> str:
        return self.name


def email_utf8(n: int, text: str, subject: str = "Help with my account") -> bytes:
    # base64 keeps any text intact on the wire (long lines, leading dots, "From ").
    body = base64.encodebytes(text.encode("utf-8")).decode("ascii")
    head = (
        f'From: "Customer {n}" <c{n}@example.com>\r\n'
        f"To: Exchange Support <{SUPPORT_EMAIL}>\r\n"
        f"Subject: =?utf-8?B?{base64.b64encode(subject.encode()).decode()}?=\r\n"
        "Date: Thu, 20 Nov 2026 18:15:00 +0800\r\n"
        f"Message-ID: <utf8-{n}@mail.example.com>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: base64\r\n"
    )
    return head.encode("ascii") + b"\r\n" + body.replace("\n", "\r\n").encode("ascii")


def email_gbk(n: int, text: str, subject: str = "账户问题") -> bytes:
    # As Chinese mail clients send it: 8bit GBK body, GB2312-labelled encoded-word subject.
    encoded_subject = base64.b64encode(subject.encode("gbk")).decode("ascii")
    head = (
        f'From: "Customer {n}" <c{n}@example.cn>\r\n'
        f"To: <{SUPPORT_EMAIL}>\r\n"
        f"Subject: =?gb2312?B?{encoded_subject}?=\r\n"
        "Date: Thu, 20 Nov 2026 18:15:00 +0800\r\n"
        f"Message-ID: <gbk-{n}@mail.example.cn>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=gbk\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
    )
    # Characters GBK lacks become "?", as a GBK mail client would send them.
    body = text.replace("\r\n", "\n").replace("\n", "\r\n").encode("gbk", "replace")
    return head.encode("ascii") + b"\r\n" + body + b"\r\n"


def x_dm(n: int, text: str) -> bytes:
    sender = str(3_000_000_000 + n)
    return _json(
        {
            "for_user_id": EXCHANGE_X_ID,
            "direct_message_events": [
                {
                    "type": "message_create",
                    "id": str(X_DM_ID + n),
                    "created_timestamp": str(CREATED * 1000),
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


def x_mention(n: int, text: str) -> bytes:
    tweet = str(X_TWEET_ID + n)
    return _json(
        {
            "for_user_id": EXCHANGE_X_ID,
            "tweet_create_events": [
                {
                    "created_at": "Wed Oct 10 20:19:24 +0000 2018",
                    "id_str": tweet,
                    "text": f"@xsup {text}",
                    "in_reply_to_status_id_str": None,
                    "user": {
                        "id_str": str(6_000_000 + n),
                        "name": f"Customer {n}",
                        "screen_name": f"cust{n}",
                    },
                    "timestamp_ms": str(CREATED * 1000),
                    "is_quote_status": False,
                }
            ],
        }
    )


def telegram(n: int, text: str) -> bytes:
    user = TELEGRAM_USER + n
    return _json(
        {
            "update_id": 873_450_000 + n,
            "message": {
                "message_id": n,
                "from": {"id": user, "is_bot": False, "first_name": "Wei", "language_code": "zh"},
                "chat": {"id": user, "first_name": "Wei", "type": "private"},
                "date": CREATED,
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


def _wechat(n: int, msg_type: str, fields: str) -> bytes:
    return (
        f"<xml><ToUserName>{_cdata(WECHAT_ACCOUNT)}</ToUserName>"
        f"<FromUserName>{_cdata(f'oUpF8uMuAJO_M2pxb1Q9z{n}')}</FromUserName>"
        f"<CreateTime>{CREATED}</CreateTime><MsgType>{_cdata(msg_type)}</MsgType>"
        f"{fields}<MsgId>{WECHAT_MSG_ID + n}</MsgId></xml>"
    ).encode()


def wechat_text(n: int, text: str) -> bytes:
    return _wechat(n, "text", f"<Content>{_cdata(text)}</Content>")


def wechat_voice(n: int, text: str) -> bytes:
    return _wechat(
        n,
        "voice",
        f"<MediaId>{_cdata(f'media-{n}')}</MediaId><Format>{_cdata('amr')}</Format>"
        f"<Recognition>{_cdata(text)}</Recognition>",
    )


def _sid(n: int) -> str:
    return f"{n:032x}"[-32:]


def twilio_transcription(n: int, text: str) -> bytes:
    caller = f"+1415{n % 10_000_000:07d}"
    sid = _sid(n)
    return urlencode(
        {
            "AccountSid": "AC2e1f0d3c4b5a69788796a5b4c3d2e1f0",
            "ApiVersion": "2010-04-01",
            "CallSid": f"CA{sid}",
            "CallStatus": "completed",
            "Direction": "inbound",
            "From": caller,
            "To": "+18005550199",
            "RecordingSid": f"RE{sid}",
            "RecordingUrl": f"https://api.twilio.com/2010-04-01/Accounts/AC2e/Recordings/RE{sid}",
            "TranscriptionSid": f"TR{sid}",
            "TranscriptionStatus": "completed",
            "TranscriptionText": text,
            "TranscriptionType": "fast",
        }
    ).encode("ascii")


def call_log(n: int, text: str) -> bytes:
    return _json(
        {
            "call_id": f"c-{n}",
            "from": f"+44 20 7946 {n % 10_000:04d}",
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


def chatwoot(n: int, text: str) -> bytes:
    return _json(
        {
            "event": "message_created",
            "id": n,
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


def chat_generic(n: int, text: str) -> bytes:
    return _json(
        {
            "session_id": f"s-{n}",
            "message_id": "m-1",
            "sent_at": "2026-11-20T12:00:00Z",
            "visitor": {"id": f"v-{n}", "name": f"Customer {n}", "locale": "en-US"},
            "text": text,
        }
    )


def _json(payload: object) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


SHAPES: tuple[Shape, ...] = (
    Shape("email", "email", "smtp", email_utf8, lambda n: f"utf8-{n}@mail.example.com"),
    Shape("email-gbk", "email", "smtp", email_gbk, lambda n: f"gbk-{n}@mail.example.cn"),
    Shape("x-dm", "social", "x", x_dm, lambda n: f"dm:{X_DM_ID + n}"),
    Shape("x-mention", "social", "x", x_mention, lambda n: f"tweet:{X_TWEET_ID + n}"),
    Shape("telegram", "social", "telegram", telegram, lambda n: f"{TELEGRAM_USER + n}:{n}"),
    Shape("wechat-text", "social", "wechat", wechat_text, lambda n: str(WECHAT_MSG_ID + n)),
    Shape("wechat-voice", "social", "wechat", wechat_voice, lambda n: str(WECHAT_MSG_ID + n)),
    Shape(
        "twilio-transcription",
        "phone",
        "twilio",
        twilio_transcription,
        lambda n: f"CA{_sid(n)}:transcription:RE{_sid(n)}",
    ),
    Shape("call-log", "phone", "generic", call_log, lambda n: f"c-{n}"),
    Shape("chatwoot", "chat", "chatwoot", chatwoot, str),
    Shape("chat", "chat", "generic", chat_generic, lambda n: f"s-{n}:m-1"),
)
SHAPES_BY_NAME = {s.name: s for s in SHAPES}
