"""Format recognition for payloads without a `provider` header, and the parser registry."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest.model import ParsedMessage, ParserConfig, Skipped
from services.ingest.parsers.sniff import PARSERS, sniff
from shared.contracts.common import CHANNELS, PROVIDERS_BY_CHANNEL, Channel, Provider
from tests.support.parsers import dumps

X_DM = dumps(
    {
        "for_user_id": "4337869213",
        "direct_message_events": [
            {
                "type": "message_create",
                "id": "954491830116155396",
                "created_timestamp": "1516403560557",
                "message_create": {
                    "target": {"recipient_id": "4337869213"},
                    "sender_id": "3001969357",
                    "message_data": {"text": "withdrawal pending"},
                },
            }
        ],
    }
)
X_FAVORITE = dumps({"for_user_id": "4337869213", "favorite_events": [{"id": "a7ba"}]})
TELEGRAM = dumps(
    {
        "update_id": 873450001,
        "message": {
            "message_id": 1365,
            "from": {"id": 1111111, "is_bot": False, "first_name": "Wei"},
            "chat": {"id": 1111111, "type": "private"},
            "date": 1714564800,
            "text": "提现一直在处理中",
        },
    }
)
WECHAT = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    "<xml><ToUserName><![CDATA[gh_3ba4d1e7a2f0]]></ToUserName>"
    "<FromUserName><![CDATA[oUpF8uMuAJO_M2pxb1Q9zNjWeS6o]]></FromUserName>"
    "<CreateTime>1714564800</CreateTime><MsgType><![CDATA[text]]></MsgType>"
    "<Content><![CDATA[充值未到账]]></Content><MsgId>24567890123456789</MsgId></xml>"
).encode()
TWILIO = urlencode(
    {
        "CallSid": "CA5f4b6e0a0d6c4f8fa5e1a7d0c3b2e1f0",
        "AccountSid": "AC2e1f0d3c4b5a69788796a5b4c3d2e1f0",
        "From": "+14155550100",
        "To": "+18005550199",
        "CallStatus": "no-answer",
        "Direction": "inbound",
    }
).encode()
CALL_LOG = dumps(
    {"call_id": "c-1", "from": "+14155550100", "direction": "inbound", "disposition": "missed"}
)
CHATWOOT = dumps(
    {
        "event": "message_created",
        "id": 50210,
        "content": "cannot log in",
        "message_type": "incoming",
        "private": False,
        "sender": {"id": 88, "type": "contact"},
        "conversation": {"id": 17},
        "account": {"id": 1},
    }
)
CHATWOOT_OTHER_EVENT = dumps(
    {"event": "conversation_status_changed", "id": 17, "status": "resolved"}
)
CHAT = dumps({"session_id": "s-1", "message_id": "m-1", "visitor": {"id": "v-1"}, "text": "hi"})
EMAIL = (
    b"From: Ann <ann@example.com>\r\nTo: support@exchange.example\r\nSubject: hi\r\n\r\nhello\r\n"
)

SAMPLES: list[tuple[Channel, bytes, Provider]] = [
    ("social", X_DM, "x"),
    ("social", X_FAVORITE, "x"),
    ("social", TELEGRAM, "telegram"),
    ("social", WECHAT, "wechat"),
    ("social", b"\xef\xbb\xbf  " + TELEGRAM, "telegram"),
    ("phone", TWILIO, "twilio"),
    ("phone", CALL_LOG, "generic"),
    ("chat", CHATWOOT, "chatwoot"),
    ("chat", CHATWOOT_OTHER_EVENT, "chatwoot"),
    ("chat", CHAT, "generic"),
    ("email", EMAIL, "smtp"),
]


@pytest.mark.parametrize(("channel", "raw", "provider"), SAMPLES)
def test_sniff_recognises_each_format(channel: Channel, raw: bytes, provider: Provider) -> None:
    assert sniff(channel, raw) == provider


@pytest.mark.parametrize(
    ("channel", "raw"),
    [
        # A format of another channel is not recognised on this one.
        ("chat", TELEGRAM),
        ("phone", CHAT),
        ("social", TWILIO),
        ("chat", WECHAT),
        ("social", b"<html><body>502 Bad Gateway</body></html>"),
        ("social", b'{"hello": "world"}'),
        ("phone", b"[1, 2, 3]"),
        ("chat", b"{not json"),
        ("phone", b"From=%2B14155550100"),
        ("chat", b""),
        ("social", b"[" * 100_000),
    ],
)
def test_sniff_returns_none_for_what_it_does_not_know(channel: Channel, raw: bytes) -> None:
    assert sniff(channel, raw) is None


def test_registry_has_a_parser_for_every_provider_of_every_channel() -> None:
    expected = {
        (channel, provider) for channel in CHANNELS for provider in PROVIDERS_BY_CHANNEL[channel]
    }

    assert set(PARSERS) == expected


@pytest.mark.parametrize(
    ("channel", "raw", "provider"), [sample for sample in SAMPLES if sample[0] != "email"]
)
def test_the_sniffed_parser_reads_the_payload(
    channel: Channel, raw: bytes, provider: Provider
) -> None:
    result = PARSERS[(channel, provider)](raw, ParserConfig())

    assert result
    assert all(isinstance(item, ParsedMessage | Skipped) for item in result)
    assert all(item.provider == provider for item in result if isinstance(item, ParsedMessage))


@settings(max_examples=100, deadline=None)
@given(
    channel=st.sampled_from(CHANNELS),
    raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode),
)
def test_sniff_never_raises_and_only_names_providers_of_the_channel(
    channel: Channel, raw: bytes
) -> None:
    provider = sniff(channel, raw)

    assert provider is None or provider in PROVIDERS_BY_CHANNEL[channel]


@settings(max_examples=100, deadline=None)
@given(
    channel=st.sampled_from(CHANNELS),
    payload=st.dictionaries(
        st.sampled_from(["for_user_id", "update_id", "call_id", "event", "session_id", "x"]),
        st.none() | st.integers() | st.text(max_size=10) | st.just("message_created"),
        max_size=4,
    ),
)
def test_sniff_on_envelope_like_json(channel: Channel, payload: dict[str, Any]) -> None:
    provider = sniff(channel, dumps(payload))

    assert provider is None or provider in PROVIDERS_BY_CHANNEL[channel]
