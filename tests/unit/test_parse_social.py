"""Social parsers: X Account Activity JSON, Telegram Bot API updates, WeChat message XML."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest.model import ParsedMessage, ParseError, ParserConfig, Skipped
from services.ingest.parsers.telegram import parse_telegram
from services.ingest.parsers.wechat import parse_wechat
from services.ingest.parsers.x import parse_x
from shared.contracts.messages import Attachment, Identity
from tests.support.mutations import json_values, mutations
from tests.support.parsers import check_contract, dumps, only_message, only_skip

EXCHANGE_X_ID = "4337869213"
SUPPORT_BOT_ID = 7000000001
CONFIG = ParserConfig(
    own_x_account_ids=frozenset({"999000111"}),
    own_telegram_bot_ids=frozenset({str(SUPPORT_BOT_ID)}),
)

X_DM: dict[str, Any] = {
    "for_user_id": EXCHANGE_X_ID,
    "direct_message_events": [
        {
            "type": "message_create",
            "id": "954491830116155396",
            "created_timestamp": "1516403560557",
            "message_create": {
                "target": {"recipient_id": EXCHANGE_X_ID},
                "sender_id": "3001969357",
                "source_app_id": "13090192",
                "message_data": {
                    "text": "Hi, my BTC withdrawal has been pending for 6 hours",
                    "entities": {"hashtags": [], "symbols": [], "user_mentions": [], "urls": []},
                },
            },
        }
    ],
    "apps": {"13090192": {"id": "13090192", "name": "FuriousCamperTestApp1"}},
    "users": {
        "3001969357": {
            "id": "3001969357",
            "created_timestamp": "1422556069340",
            "name": "Jordan Brinks",
            "screen_name": "furiouscamper",
            "protected": False,
            "verified": False,
            "followers_count": 22,
        },
        EXCHANGE_X_ID: {"id": EXCHANGE_X_ID, "name": "Exchange Support", "screen_name": "xsupport"},
    },
}

X_MENTION: dict[str, Any] = {
    "for_user_id": EXCHANGE_X_ID,
    "user_has_blocked": False,
    "tweet_create_events": [
        {
            "created_at": "Wed Oct 10 20:19:24 +0000 2018",
            "id": 1050118621198921728,
            "id_str": "1050118621198921728",
            "text": "@xsupport my deposit never arrived, tx 0x5c50… https://t.co/abc",
            "truncated": True,
            "extended_tweet": {
                "full_text": (
                    "@xsupport my deposit never arrived, tx "
                    "0x5c504ed432cb51138bcf09aa5e8a410dd4a1e204ef84bfed1be16dfba1b22060 please help"
                ),
                "display_text_range": [10, 140],
            },
            "in_reply_to_status_id": 1050100000000000000,
            "in_reply_to_status_id_str": "1050100000000000000",
            "in_reply_to_user_id_str": EXCHANGE_X_ID,
            "user": {
                "id": 6253282,
                "id_str": "6253282",
                "name": "Satoshi Fan",
                "screen_name": "satofan",
                "lang": None,
            },
            "timestamp_ms": "1539202764000",
            "lang": "en",
            "is_quote_status": False,
        }
    ],
}

TG_MESSAGE: dict[str, Any] = {
    "update_id": 873450001,
    "message": {
        "message_id": 1365,
        "from": {
            "id": 1111111,
            "is_bot": False,
            "first_name": "Wei",
            "last_name": "Zhang",
            "username": "weizhang",
            "language_code": "zh-hans",
        },
        "chat": {"id": 1111111, "first_name": "Wei", "username": "weizhang", "type": "private"},
        "date": 1714564800,
        "text": "提现一直在处理中\r\n已经三个小时了",
    },
}

WECHAT_TEXT = (
    "<xml><ToUserName><![CDATA[gh_3ba4d1e7a2f0]]></ToUserName>"
    "<FromUserName><![CDATA[oUpF8uMuAJO_M2pxb1Q9zNjWeS6o]]></FromUserName>"
    "<CreateTime>1714564800</CreateTime><MsgType><![CDATA[text]]></MsgType>"
    "<Content><![CDATA[充值未到账，交易哈希 0xabc]]></Content>"
    "<MsgId>24567890123456789</MsgId><MsgDataId></MsgDataId><Idx></Idx></xml>"
).encode()


# --- X -----------------------------------------------------------------------------------


def test_x_direct_message_becomes_a_message_from_the_sender() -> None:
    message = only_message(parse_x(dumps(X_DM), CONFIG))

    assert message.channel == "social"
    assert message.provider == "x"
    assert message.provider_message_id == "dm:954491830116155396"
    # The DM conversation is the pair of participants, whichever of them writes.
    assert message.conversation_key == f"dm:3001969357:{EXCHANGE_X_ID}"
    assert message.identities == (Identity(kind="x", value="3001969357"),)
    assert message.sender_name == "Jordan Brinks"
    assert message.text == "Hi, my BTC withdrawal has been pending for 6 hours"
    assert message.sent_at == datetime(2018, 1, 19, 23, 12, 40, 557000, tzinfo=UTC)


def test_x_mention_uses_the_full_text_and_the_replied_to_tweet_as_thread() -> None:
    message = only_message(parse_x(dumps(X_MENTION), CONFIG))

    assert message.provider_message_id == "tweet:1050118621198921728"
    assert message.conversation_key == "tweet:1050100000000000000"
    assert message.text.endswith("please help")
    assert message.identities == (Identity(kind="x", value="6253282"),)
    assert message.sender_name == "Satoshi Fan"
    assert message.locale_hint == "en"
    assert message.sent_at == datetime(2018, 10, 10, 20, 19, 24, tzinfo=UTC)


def test_x_mention_without_parent_is_its_own_thread_and_created_at_is_a_fallback() -> None:
    payload = copy.deepcopy(X_MENTION)
    tweet = payload["tweet_create_events"][0]
    tweet["in_reply_to_status_id_str"] = None
    del tweet["timestamp_ms"], tweet["extended_tweet"]
    tweet["created_at"] = "Wed Oct 10 22:19:24 +0200 2018"

    message = only_message(parse_x(dumps(payload), CONFIG))

    assert message.conversation_key == "tweet:1050118621198921728"
    assert message.text.startswith("@xsupport my deposit never arrived")
    assert message.sent_at == datetime(2018, 10, 10, 20, 19, 24, tzinfo=UTC)


def test_x_several_events_in_one_delivery_give_one_result_each() -> None:
    payload = copy.deepcopy(X_DM)
    reply = copy.deepcopy(payload["direct_message_events"][0])
    reply["id"] = "954491830116155397"
    reply["message_create"]["sender_id"] = EXCHANGE_X_ID
    reply["message_create"]["target"]["recipient_id"] = "3001969357"
    payload["direct_message_events"].append(reply)
    payload["tweet_create_events"] = X_MENTION["tweet_create_events"]

    result = parse_x(dumps(payload), CONFIG)

    assert [type(item) for item in result] == [ParsedMessage, Skipped, ParsedMessage]
    assert result[1] == Skipped(reason="x: own account")


@pytest.mark.parametrize("own_id", [EXCHANGE_X_ID, "999000111"])
def test_x_tweets_by_the_exchange_accounts_are_skipped(own_id: str) -> None:
    payload = copy.deepcopy(X_MENTION)
    payload["tweet_create_events"][0]["user"]["id_str"] = own_id

    assert only_skip(parse_x(dumps(payload), CONFIG)) == "x: own account"


def test_x_retweets_are_skipped() -> None:
    payload = copy.deepcopy(X_MENTION)
    payload["tweet_create_events"][0]["retweeted_status"] = {"id_str": "1"}

    assert only_skip(parse_x(dumps(payload), CONFIG)) == "x: retweet"


@pytest.mark.parametrize(
    "payload",
    [
        {
            "for_user_id": EXCHANGE_X_ID,
            "favorite_events": [{"id": "a7ba59eab0bfcba386f7acedac279542", "favorited_status": {}}],
        },
        {"for_user_id": EXCHANGE_X_ID, "follow_events": [{"type": "follow"}]},
        {
            "for_user_id": EXCHANGE_X_ID,
            "direct_message_indicate_typing_events": [{"sender_id": "3001969357"}],
        },
        {"user_event": {"revoke": {"date_time": "2018-05-24T09:48:12+00:00"}}},
    ],
)
def test_x_non_message_events_are_skipped(payload: dict[str, Any]) -> None:
    assert only_skip(parse_x(dumps(payload), CONFIG)) == "x: not a message event"


def test_x_message_events_without_for_user_id_are_rejected() -> None:
    payload = copy.deepcopy(X_DM)
    del payload["for_user_id"]

    with pytest.raises(ParseError) as caught:
        parse_x(dumps(payload), CONFIG)
    assert caught.value.reason == "x: missing for_user_id"


def test_x_dm_photo_is_kept_as_attachment_metadata() -> None:
    payload = copy.deepcopy(X_DM)
    payload["direct_message_events"][0]["message_create"]["message_data"] = {
        "text": "",
        "attachment": {
            "type": "media",
            "media": {
                "id_str": "954491829906440193",
                "media_url_https": "https://ton.twitter.com/1.1/ton/data/dm/9544/9544/kH3q.jpg",
                "type": "photo",
            },
        },
    }

    message = only_message(parse_x(dumps(payload), CONFIG))

    assert message.attachments == (
        Attachment(name="kH3q.jpg", content_type="image/jpeg", size_bytes=0),
    )


# --- Telegram ----------------------------------------------------------------------------


def test_telegram_private_message() -> None:
    message = only_message(parse_telegram(dumps(TG_MESSAGE), CONFIG))

    assert message.provider == "telegram"
    assert message.provider_message_id == "1111111:1365"
    assert message.conversation_key == "1111111"
    assert message.identities == (Identity(kind="telegram", value="1111111"),)
    assert message.sender_name == "Wei Zhang"
    assert message.locale_hint == "zh-hans"
    assert message.text == "提现一直在处理中\n已经三个小时了"
    assert message.sent_at == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_telegram_edit_is_a_new_message_but_a_redelivered_edit_is_not() -> None:
    payload = {"update_id": 873450002, "edited_message": copy.deepcopy(TG_MESSAGE["message"])}
    payload["edited_message"]["edit_date"] = 1714564900
    payload["edited_message"]["text"] = "提现一直在处理中 (txid 9f2c...)"

    first = only_message(parse_telegram(dumps(payload), CONFIG))
    again = only_message(parse_telegram(dumps(payload), CONFIG))
    original = only_message(parse_telegram(dumps(TG_MESSAGE), CONFIG))

    assert first.provider_message_id == again.provider_message_id == "1111111:1365:edit:1714564900"
    assert first.provider_message_id != original.provider_message_id
    assert first.conversation_key == original.conversation_key
    assert first.sent_at == datetime(2024, 5, 1, 12, 1, 40, tzinfo=UTC)


def test_telegram_photo_with_caption_keeps_caption_and_largest_size() -> None:
    message_body = copy.deepcopy(TG_MESSAGE["message"])
    del message_body["text"]
    message_body["caption"] = "this error shows on withdraw"
    message_body["photo"] = [
        {
            "file_id": "AgAD1",
            "file_unique_id": "AQAD1",
            "file_size": 1290,
            "width": 90,
            "height": 51,
        },
        {
            "file_id": "AgAD2",
            "file_unique_id": "AQAD2",
            "file_size": 81240,
            "width": 1280,
            "height": 720,
        },
        {
            "file_id": "AgAD3",
            "file_unique_id": "AQAD3",
            "file_size": 16990,
            "width": 320,
            "height": 180,
        },
    ]
    message_body["document"] = {
        "file_name": "statement.pdf",
        "mime_type": "application/pdf",
        "file_id": "BQAD",
        "file_unique_id": "AgAD",
        "file_size": 48213,
    }

    message = only_message(parse_telegram(dumps({"update_id": 1, "message": message_body}), CONFIG))

    assert message.text == "this error shows on withdraw"
    assert message.attachments == (
        Attachment(name="photo.jpg", content_type="image/jpeg", size_bytes=81240),
        Attachment(name="statement.pdf", content_type="application/pdf", size_bytes=48213),
    )


@pytest.mark.parametrize(
    "sender",
    [
        {"id": 5550001, "is_bot": True, "first_name": "SomeBot", "username": "some_bot"},
        {"id": SUPPORT_BOT_ID, "is_bot": False, "first_name": "Support"},
    ],
)
def test_telegram_bot_senders_are_skipped(sender: dict[str, Any]) -> None:
    payload = copy.deepcopy(TG_MESSAGE)
    payload["message"]["from"] = sender

    assert only_skip(parse_telegram(dumps(payload), CONFIG)) == "telegram: bot sender"


def test_telegram_group_messages_are_skipped() -> None:
    payload = copy.deepcopy(TG_MESSAGE)
    payload["message"]["chat"] = {
        "id": -1001234567890,
        "title": "Exchange CN",
        "type": "supergroup",
    }

    assert only_skip(parse_telegram(dumps(payload), CONFIG)) == "telegram: not a private chat"


@pytest.mark.parametrize(
    "payload",
    [
        {
            "update_id": 873450003,
            "callback_query": {
                "id": "4382bfdwdsb323b2d9",
                "from": TG_MESSAGE["message"]["from"],
                "data": "menu:withdraw",
                "chat_instance": "-1234",
            },
        },
        {
            "update_id": 873450004,
            "my_chat_member": {
                "chat": TG_MESSAGE["message"]["chat"],
                "from": TG_MESSAGE["message"]["from"],
                "date": 1714564800,
                "old_chat_member": {"status": "member"},
                "new_chat_member": {"status": "kicked"},
            },
        },
    ],
)
def test_telegram_other_update_kinds_are_skipped(payload: dict[str, Any]) -> None:
    assert only_skip(parse_telegram(dumps(payload), CONFIG)) == "telegram: not a message update"


def test_telegram_sticker_without_text_is_skipped() -> None:
    payload = copy.deepcopy(TG_MESSAGE)
    del payload["message"]["text"]
    payload["message"]["sticker"] = {"file_id": "CAAD", "emoji": "😡"}

    assert only_skip(parse_telegram(dumps(payload), CONFIG)) == "telegram: no text or file"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe{}", "telegram: not utf-8"),
        (b'{"update_id": 1, "message": ', "telegram: invalid json"),
        (b"[1, 2]", "telegram: not an object"),
        (b'{"update_id": ' + b"9" * 5000 + b"}", "telegram: invalid json"),
        (b"[" * 100_000, "telegram: invalid json"),
        (b'{"update_id": "1", "message": {"message_id": 1}}', "telegram: invalid payload"),
        (b'{"update_id": true}', "telegram: invalid payload"),
        (b'{"update_id": 1, "message": null, "edited_message": []}', "telegram: invalid payload"),
    ],
)
def test_telegram_malformed_updates_raise_parse_error(raw: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_telegram(raw, CONFIG)
    assert caught.value.reason == reason


# --- WeChat ------------------------------------------------------------------------------


def test_wechat_text_message() -> None:
    message = only_message(parse_wechat(WECHAT_TEXT, CONFIG))

    assert message.provider == "wechat"
    assert message.provider_message_id == "24567890123456789"
    assert message.conversation_key == "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
    assert message.identities == (Identity(kind="wechat", value="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"),)
    assert message.text == "充值未到账，交易哈希 0xabc"
    assert message.sent_at == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def wechat(msg_type: str, body: str, msg_id: str | None = "24567890123456790") -> bytes:
    id_element = f"<MsgId>{msg_id}</MsgId>" if msg_id else ""
    return (
        "<xml><ToUserName><![CDATA[gh_3ba4d1e7a2f0]]></ToUserName>"
        "<FromUserName><![CDATA[oUpF8uMuAJO_M2pxb1Q9zNjWeS6o]]></FromUserName>"
        f"<CreateTime>1714564800</CreateTime><MsgType><![CDATA[{msg_type}]]></MsgType>"
        f"{body}{id_element}</xml>"
    ).encode()


def test_wechat_voice_uses_the_recognised_speech() -> None:
    raw = wechat(
        "voice",
        "<MediaId><![CDATA[m-7]]></MediaId><Format><![CDATA[amr]]></Format>"
        "<Recognition><![CDATA[我的账户被盗了]]></Recognition>",
    )

    assert only_message(parse_wechat(raw, CONFIG)).text == "我的账户被盗了"


def test_wechat_voice_without_recognition_is_skipped() -> None:
    raw = wechat("voice", "<MediaId><![CDATA[m-7]]></MediaId><Format><![CDATA[amr]]></Format>")

    assert only_skip(parse_wechat(raw, CONFIG)) == "wechat: voice without recognition"


def test_wechat_image_is_a_placeholder_message_with_attachment() -> None:
    raw = wechat(
        "image",
        "<PicUrl><![CDATA[http://mmbiz.qpic.cn/x]]></PicUrl><MediaId><![CDATA[m-9]]></MediaId>",
    )

    message = only_message(parse_wechat(raw, CONFIG))

    assert message.text == "[image]"
    assert message.attachments == (
        Attachment(name="image.jpg", content_type="image/jpeg", size_bytes=0),
    )


@pytest.mark.parametrize("event", ["subscribe", "unsubscribe", "CLICK", "SCAN"])
def test_wechat_events_are_skipped(event: str) -> None:
    raw = wechat(
        "event", f"<Event><![CDATA[{event}]]></Event><EventKey><![CDATA[]]></EventKey>", None
    )

    assert only_skip(parse_wechat(raw, CONFIG)) == "wechat: event"


def test_wechat_message_without_msgid_gets_a_deterministic_id() -> None:
    raw = wechat("text", "<Content><![CDATA[hello]]></Content>", None)

    first, again = only_message(parse_wechat(raw, CONFIG)), only_message(parse_wechat(raw, CONFIG))

    assert first.provider_message_id == again.provider_message_id
    assert first.provider_message_id == "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o:1714564800"


@pytest.mark.parametrize(
    "raw",
    [
        # billion laughs
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
        b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
        b"<xml><ToUserName>a</ToUserName><Content>&lol3;</Content></xml>",
        # external entity (XXE)
        b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        b"<xml><ToUserName>a</ToUserName><Content>&xxe;</Content></xml>",
        # a DTD alone is refused too
        b'<!DOCTYPE xml SYSTEM "http://attacker.example/x.dtd"><xml><ToUserName>a</ToUserName></xml>',
    ],
)
def test_wechat_xml_entities_and_dtds_are_rejected(raw: bytes) -> None:
    with pytest.raises(ParseError) as caught:
        parse_wechat(raw, CONFIG)
    assert caught.value.reason == "wechat: forbidden xml construct"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"<xml><ToUserName>a</ToUserName>", "wechat: invalid xml"),
        (b"<root><MsgType>text</MsgType></root>", "wechat: root is not <xml>"),
        (b"<xml><Encrypt><![CDATA[bXlzZWNyZXQ=]]></Encrypt></xml>", "wechat: encrypted message"),
        (
            wechat("text", "<Content>a</Content><Content>b</Content>"),
            "wechat: duplicate or invalid element",
        ),
        (WECHAT_TEXT.replace(b"1714564800", b"99999999999999"), "wechat: invalid payload"),
        (
            WECHAT_TEXT.replace(
                b"<FromUserName><![CDATA[oUpF8uMuAJO_M2pxb1Q9zNjWeS6o]]>", b"<FromUserName>"
            ),
            "wechat: invalid payload",
        ),
    ],
)
def test_wechat_malformed_xml_raises_parse_error(raw: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_wechat(raw, CONFIG)
    assert caught.value.reason == reason


# --- determinism -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parser", "raw"),
    [
        (parse_x, dumps(X_DM)),
        (parse_x, dumps(X_MENTION)),
        (parse_telegram, dumps(TG_MESSAGE)),
        (parse_wechat, WECHAT_TEXT),
    ],
)
def test_same_payload_twice_gives_the_same_ids(parser: Any, raw: bytes) -> None:
    assert parser(raw, CONFIG) == parser(raw, CONFIG)
    assert only_message(parser(raw, CONFIG)).provider_message_id


# --- properties: hostile input only ever raises ParseError --------------------------------

JSON_VALUES = json_values(
    [
        "$where",
        {"$gt": ""},
        {"$ne": None},
        "\x00\x1b[31m\u202e",
        "\ud800",
        10**40,
        -(2**70),
        "",
        [],
        {},
    ]
)
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(raw=st.binary(max_size=300))
def test_random_bytes_only_raise_parse_error(raw: bytes) -> None:
    for parser in (parse_x, parse_telegram, parse_wechat):
        check_contract(parser, raw, CONFIG)


@PROPERTY
@given(value=JSON_VALUES)
def test_random_json_only_raises_parse_error(value: Any) -> None:
    for parser in (parse_x, parse_telegram):
        check_contract(parser, dumps(value), CONFIG)


@PROPERTY
@given(payload=mutations(X_DM, JSON_VALUES) | mutations(X_MENTION, JSON_VALUES))
def test_mutated_x_payloads_only_raise_parse_error(payload: Any) -> None:
    check_contract(parse_x, dumps(payload), CONFIG)


@PROPERTY
@given(payload=mutations(TG_MESSAGE, JSON_VALUES))
def test_mutated_telegram_updates_only_raise_parse_error(payload: Any) -> None:
    check_contract(parse_telegram, dumps(payload), CONFIG)


WECHAT_TAGS = st.sampled_from(
    [
        "ToUserName",
        "FromUserName",
        "CreateTime",
        "MsgType",
        "Content",
        "MsgId",
        "Recognition",
        "Event",
        "Encrypt",
        "x",
    ]
)


@PROPERTY
@given(
    fields=st.dictionaries(
        WECHAT_TAGS,
        st.sampled_from(["text", "voice", "event", "1714564800", "-1", "$where", "]]>"])
        | st.text(max_size=20),
        max_size=8,
    ),
    cdata=st.booleans(),
)
def test_generated_wechat_xml_only_raises_parse_error(fields: dict[str, str], cdata: bool) -> None:
    body = "".join(
        f"<{tag}><![CDATA[{value}]]></{tag}>" if cdata else f"<{tag}>{value}</{tag}>"
        for tag, value in fields.items()
    )
    check_contract(parse_wechat, f"<xml>{body}</xml>".encode("utf-8", "surrogatepass"), CONFIG)
