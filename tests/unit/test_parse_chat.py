"""Chat parsers: Chatwoot `message_created` webhooks and the generic JSON chat message."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest.model import ParseError, ParserConfig
from services.ingest.parsers.chat_generic import parse_chat_generic
from services.ingest.parsers.chatwoot import parse_chatwoot
from shared.contracts.messages import Attachment, Identity
from tests.support.mutations import json_values, mutations
from tests.support.parsers import check_contract, dumps, only_message, only_skip

CONFIG = ParserConfig()

CHATWOOT_INCOMING: dict[str, Any] = {
    "event": "message_created",
    "id": 50210,
    "content": "Hello, I cannot log in since I lost my phone with Google Authenticator",
    "created_at": "2024-05-01T10:00:00.000Z",
    "message_type": "incoming",
    "content_type": "text",
    "content_attributes": {},
    "source_id": None,
    "private": False,
    "sender": {
        "id": 88,
        "name": "Ann Lee",
        "email": "Ann.Lee@Example.COM",
        "phone_number": "+1 415 555 0100",
        "identifier": None,
        "thumbnail": "",
        "additional_attributes": {"city": "", "country": ""},
        "custom_attributes": {},
        "type": "contact",
    },
    "conversation": {
        "id": 17,
        "inbox_id": 3,
        "status": "open",
        "channel": "Channel::WebWidget",
        "additional_attributes": {
            "browser": {"browser_name": "Chrome", "platform_name": "macOS"},
            "referer": "https://exchange.example/support",
            "browser_language": "en",
        },
        "contact_inbox": {"source_id": "8a1e5f"},
        "messages": [],
    },
    "inbox": {"id": 3, "name": "Website"},
    "account": {"id": 1, "name": "Exchange"},
    "attachments": [],
}

CHAT_GENERIC: dict[str, Any] = {
    "session_id": "s-4f1c",
    "message_id": "m-0007",
    "sent_at": "2024-05-01T20:15:00+08:00",
    "visitor": {
        "id": "v-9d2e",
        "name": "王小明",
        "email": "XiaoMing@Example.CN",
        "account_uid": 10293847,
        "locale": "zh_CN",
    },
    "text": "我的充值还没到账\x00\x1b[2J，txid 0x5c50",
}


# --- Chatwoot ----------------------------------------------------------------------------


def test_chatwoot_incoming_message_carries_every_identity() -> None:
    message = only_message(parse_chatwoot(dumps(CHATWOOT_INCOMING), CONFIG))

    assert message.channel == "chat"
    assert message.provider == "chatwoot"
    assert message.provider_message_id == "50210"
    # Conversation ids in webhooks are per account, so the account scopes the key.
    assert message.conversation_key == "1:17"
    assert message.identities == (
        Identity(kind="chatwoot", value="88"),
        Identity(kind="email", value="ann.lee@example.com"),
        Identity(kind="phone", value="+14155550100"),
    )
    assert message.sender_name == "Ann Lee"
    assert message.locale_hint == "en"
    assert message.sent_at == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert message.text.startswith("Hello, I cannot log in")


def test_chatwoot_integer_message_type_and_unix_created_at() -> None:
    payload = {**CHATWOOT_INCOMING, "message_type": 0, "created_at": 1714557600}

    message = only_message(parse_chatwoot(dumps(payload), CONFIG))

    assert message.sent_at == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("message_type", "reason"),
    [
        ("outgoing", "chatwoot: outgoing message"),
        (1, "chatwoot: outgoing message"),
        ("activity", "chatwoot: activity message"),
        (2, "chatwoot: activity message"),
        ("template", "chatwoot: template message"),
        (3, "chatwoot: template message"),
        (7, "chatwoot: unknown message"),
    ],
)
def test_chatwoot_non_customer_messages_are_skipped(message_type: str | int, reason: str) -> None:
    payload = {**CHATWOOT_INCOMING, "message_type": message_type}

    assert only_skip(parse_chatwoot(dumps(payload), CONFIG)) == reason


def test_chatwoot_private_note_is_skipped() -> None:
    note = {
        **CHATWOOT_INCOMING,
        "content": "Customer says seed phrase is abandon abandon ... (checking)",
        "message_type": "outgoing",
        "private": True,
        "sender": {"id": 4, "name": "Agent Bo", "email": "bo@exchange.example", "type": "user"},
    }

    assert only_skip(parse_chatwoot(dumps(note), CONFIG)) == "chatwoot: private note"


def test_chatwoot_incoming_from_an_agent_is_skipped() -> None:
    payload = copy.deepcopy(CHATWOOT_INCOMING)
    payload["sender"]["type"] = "user"

    assert only_skip(parse_chatwoot(dumps(payload), CONFIG)) == "chatwoot: not from a contact"


@pytest.mark.parametrize(
    "event", ["conversation_created", "message_updated", "webwidget_triggered"]
)
def test_chatwoot_other_events_are_skipped(event: str) -> None:
    payload = {**CHATWOOT_INCOMING, "event": event}

    assert only_skip(parse_chatwoot(dumps(payload), CONFIG)) == "chatwoot: not message_created"


def test_chatwoot_attachment_only_message_keeps_the_metadata() -> None:
    payload = {
        **CHATWOOT_INCOMING,
        "content": None,
        "attachments": [
            {
                "id": 901,
                "message_id": 50210,
                "file_type": "image",
                "account_id": 1,
                "extension": None,
                "data_url": "https://chat.example/rails/active_storage/blobs/eyJf/withdraw%20error.png?x=1",
                "thumb_url": "https://chat.example/thumb.png",
                "file_size": 48213,
            }
        ],
    }

    message = only_message(parse_chatwoot(dumps(payload), CONFIG))

    assert message.text == ""
    assert message.attachments == (
        Attachment(name="withdraw error.png", content_type="image/*", size_bytes=48213),
    )


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({**CHATWOOT_INCOMING, "sender": None}, "chatwoot: missing sender"),
        ({k: v for k, v in CHATWOOT_INCOMING.items() if k != "event"}, "chatwoot: invalid payload"),
        ({**CHATWOOT_INCOMING, "message_type": True}, "chatwoot: invalid payload"),
        ({**CHATWOOT_INCOMING, "private": "false"}, "chatwoot: invalid payload"),
        ({**CHATWOOT_INCOMING, "conversation": {"$gt": ""}}, "chatwoot: invalid payload"),
        ({**CHATWOOT_INCOMING, "attachments": [{"file_size": -1}]}, "chatwoot: invalid payload"),
    ],
)
def test_chatwoot_malformed_payloads_raise_parse_error(
    payload: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ParseError) as caught:
        parse_chatwoot(dumps(payload), CONFIG)
    assert caught.value.reason == reason


def test_chatwoot_odd_conversation_attributes_do_not_reject_the_message() -> None:
    payload = copy.deepcopy(CHATWOOT_INCOMING)
    payload["conversation"]["additional_attributes"] = ["not", "a", "dict"]

    message = only_message(parse_chatwoot(dumps(payload), CONFIG))

    assert message.locale_hint is None


# --- generic chat ------------------------------------------------------------------------


def test_generic_chat_message_with_all_identities() -> None:
    message = only_message(parse_chat_generic(dumps(CHAT_GENERIC), CONFIG))

    assert message.channel == "chat"
    assert message.provider == "generic"
    assert message.provider_message_id == "s-4f1c:m-0007"
    assert message.conversation_key == "s-4f1c"
    assert message.identities == (
        Identity(kind="chat_visitor", value="v-9d2e"),
        Identity(kind="email", value="xiaoming@example.cn"),
        Identity(kind="account_uid", value="10293847"),
    )
    assert message.sender_name == "王小明"
    assert message.locale_hint == "zh-CN"
    # Control characters go, the words stay.
    assert message.text == "我的充值还没到账[2J，txid 0x5c50"
    assert message.sent_at == datetime(2024, 5, 1, 12, 15, tzinfo=UTC)


def test_generic_chat_anonymous_visitor_with_bad_email_and_locale() -> None:
    payload = {**CHAT_GENERIC, "visitor": {"id": "v-1", "email": "$where", "locale": "{$gt}"}}

    message = only_message(parse_chat_generic(dumps(payload), CONFIG))

    assert message.identities == (Identity(kind="chat_visitor", value="v-1"),)
    assert message.locale_hint is None


def test_generic_chat_text_is_cut_to_the_configured_length() -> None:
    payload = {**CHAT_GENERIC, "text": "a" * 50}

    message = only_message(parse_chat_generic(dumps(payload), ParserConfig(max_text_chars=10)))

    assert message.text == "a" * 10


def test_generic_chat_blank_text_is_skipped() -> None:
    payload = {**CHAT_GENERIC, "text": " \u0000\n\t "}

    assert only_skip(parse_chat_generic(dumps(payload), CONFIG)) == "generic: empty message"


@pytest.mark.parametrize("missing", ["session_id", "message_id", "text"])
def test_generic_chat_without_required_field_raises_parse_error(missing: str) -> None:
    payload = {k: v for k, v in CHAT_GENERIC.items() if k != missing}

    with pytest.raises(ParseError) as caught:
        parse_chat_generic(dumps(payload), CONFIG)
    assert caught.value.reason == "generic: invalid payload"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (dumps({**CHAT_GENERIC, "session_id": {"$gt": ""}}), "generic: invalid payload"),
        (dumps({**CHAT_GENERIC, "message_id": True}), "generic: invalid payload"),
        (dumps({**CHAT_GENERIC, "text": 42}), "generic: invalid payload"),
        (dumps({**CHAT_GENERIC, "sent_at": "yesterday"}), "generic: invalid payload"),
        (dumps({**CHAT_GENERIC, "session_id": "\x00\x01"}), "generic: invalid payload"),
        (dumps({**CHAT_GENERIC, "session_id": "s" * 129}), "generic: invalid payload"),
        (b"\xc3\x28", "generic: not utf-8"),
        (b"null", "generic: not an object"),
        (b'{"a": ' * 50_000, "generic: invalid json"),
    ],
)
def test_generic_chat_malformed_input_raises_parse_error(raw: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_chat_generic(raw, CONFIG)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("parser", "raw"),
    [(parse_chatwoot, dumps(CHATWOOT_INCOMING)), (parse_chat_generic, dumps(CHAT_GENERIC))],
)
def test_same_payload_twice_gives_the_same_ids(parser: Any, raw: bytes) -> None:
    assert parser(raw, CONFIG) == parser(raw, CONFIG)


# --- properties: hostile input only ever raises ParseError --------------------------------

JSON_VALUES = json_values(
    ["$where", {"$gt": ""}, {"$ne": None}, "\x00\x1b[31m\u202e", "\ud800", 10**40, "", [], {}]
)
PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(raw=st.binary(max_size=300))
def test_random_bytes_only_raise_parse_error(raw: bytes) -> None:
    check_contract(parse_chatwoot, raw, CONFIG)
    check_contract(parse_chat_generic, raw, CONFIG)


@PROPERTY
@given(value=JSON_VALUES)
def test_random_json_only_raises_parse_error(value: Any) -> None:
    check_contract(parse_chatwoot, dumps(value), CONFIG)
    check_contract(parse_chat_generic, dumps(value), CONFIG)


@PROPERTY
@given(payload=mutations(CHATWOOT_INCOMING, JSON_VALUES))
def test_mutated_chatwoot_payloads_only_raise_parse_error(payload: Any) -> None:
    check_contract(parse_chatwoot, dumps(payload), CONFIG)


@PROPERTY
@given(payload=mutations(CHAT_GENERIC, JSON_VALUES))
def test_mutated_generic_chat_messages_only_raise_parse_error(payload: Any) -> None:
    check_contract(parse_chat_generic, dumps(payload), CONFIG)
