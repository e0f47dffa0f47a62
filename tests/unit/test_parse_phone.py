"""Phone parsers: Twilio voice webhooks (form-encoded) and the generic JSON call log."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest.model import (
    IvrMenus,
    MenuChoice,
    ParseError,
    ParserConfig,
)
from services.ingest.parsers.calllog import parse_calllog
from services.ingest.parsers.twilio import parse_twilio
from shared.contracts.messages import Identity
from tests.support.mutations import json_values
from tests.support.parsers import check_contract, only_message, only_skip

HOTLINE = "+85230018888"
TOPICS = {
    "1": MenuChoice(category="deposit"),
    "2": MenuChoice(category="withdrawal", menu={"1": MenuChoice(category="deposit")}),
    "3": MenuChoice(category="login_2fa"),
    "9": MenuChoice(category="stolen_funds"),
}
CONFIG = ParserConfig(
    ivr=IvrMenus(
        lines={
            "default": TOPICS,
            # A line whose first level is the language, the second the topic.
            HOTLINE: {
                "1": MenuChoice(language="zh", menu=TOPICS),
                "2": MenuChoice(language="en", menu=TOPICS),
            },
        }
    )
)
CALL_SID = "CA5f4b6e0a0d6c4f8fa5e1a7d0c3b2e1f0"
CALLER = "+14155550100"

# Fields every Twilio voice request carries.
TWILIO_BASE: dict[str, str] = {
    "AccountSid": "AC2e1f0d3c4b5a69788796a5b4c3d2e1f0",
    "ApiVersion": "2010-04-01",
    "CallSid": CALL_SID,
    "Called": "+18005550199",
    "CalledCountry": "US",
    "Caller": CALLER,
    "CallerCountry": "US",
    "CallStatus": "ringing",
    "Direction": "inbound",
    "From": CALLER,
    "FromCountry": "US",
    "To": "+18005550199",
}
GATHER = {
    **TWILIO_BASE,
    "CallStatus": "in-progress",
    "Digits": "2",
    "FinishedOnKey": "",
    "msg": "Gather End",
}
TRANSCRIPTION = {
    **TWILIO_BASE,
    "CallStatus": "completed",
    "RecordingSid": "RE0a1b2c3d4e5f60718293a4b5c6d7e8f9",
    "RecordingUrl": "https://api.twilio.com/2010-04-01/Accounts/AC2e/Recordings/RE0a1b",
    "TranscriptionSid": "TR9f8e7d6c5b4a39281706f5e4d3c2b1a0",
    "TranscriptionStatus": "completed",
    "TranscriptionText": (
        "Hi, my withdrawal of 2 BTC is stuck since this morning, please call me back."
    ),
    "TranscriptionType": "fast",
    "TranscriptionUrl": "https://api.twilio.com/2010-04-01/Accounts/AC2e/Transcriptions/TR9f",
    "url": "https://ingest.example/twilio/transcription",
}
STATUS_COMPLETED = {
    **TWILIO_BASE,
    "CallStatus": "completed",
    "CallDuration": "184",
    "Duration": "4",
    "Timestamp": "Wed, 01 May 2024 12:03:04 +0000",
    "CallbackSource": "call-progress-events",
    "SequenceNumber": "3",
}

CALL_LOG: dict[str, Any] = {
    "call_id": "c-20240501-8812",
    "from": "+44 20 7946-0018",
    "to": "+44 800 123 4567",
    "started_at": "2024-05-01T09:30:00+01:00",
    "duration_s": 41,
    "direction": "inbound",
    "ivr_path": ["2", "1"],
    "disposition": "abandoned",
    "transcript": None,
    "callback_number": None,
}


def form(fields: dict[str, str]) -> bytes:
    return urlencode(fields).encode("ascii")


# --- Twilio ------------------------------------------------------------------------------


def test_twilio_ivr_digit_becomes_the_category_hint() -> None:
    message = only_message(parse_twilio(form(GATHER), CONFIG))

    assert message.channel == "phone"
    assert message.provider == "twilio"
    assert message.kind == "message"
    assert message.category_hint == "withdrawal"
    assert message.provider_message_id == f"{CALL_SID}:digits:2"
    # Calls join by caller number, so a second call lands in the same conversation.
    assert message.conversation_key == CALLER
    assert message.identities == (Identity(kind="phone", value=CALLER),)


def test_twilio_two_level_menu_picks_language_then_topic() -> None:
    message = only_message(
        parse_twilio(form({**GATHER, "Digits": "19", "Called": HOTLINE, "To": HOTLINE}), CONFIG)
    )

    assert message.language_choice == "zh"
    assert message.category_hint == "stolen_funds"


def test_twilio_first_level_only_sets_the_language() -> None:
    message = only_message(parse_twilio(form({**GATHER, "Digits": "2", "Called": HOTLINE}), CONFIG))

    assert message.language_choice == "en"
    assert message.category_hint is None


def test_call_log_two_level_menu_on_its_line() -> None:
    log = {**CALL_LOG, "to": "+852 3001 8888", "ivr_path": ["1", "2", "1"]}

    message = only_message(parse_calllog(json.dumps(log).encode(), CONFIG))

    assert message.language_choice == "zh"
    assert message.category_hint == "deposit"


def test_twilio_unknown_digit_has_no_category() -> None:
    message = only_message(parse_twilio(form({**GATHER, "Digits": "7"}), CONFIG))

    assert message.category_hint is None
    assert message.provider_message_id == f"{CALL_SID}:digits:7"


def test_twilio_speech_result_is_the_text_and_its_stage_depends_on_what_was_said() -> None:
    said = {
        **TWILIO_BASE,
        "CallStatus": "in-progress",
        "SpeechResult": "My account was hacked",
        "Confidence": "0.92",
    }
    other = {**said, "SpeechResult": "I lost my 2FA"}

    first = only_message(parse_twilio(form(said), CONFIG))
    second = only_message(parse_twilio(form(other), CONFIG))

    assert first.text == "My account was hacked"
    assert first.provider_message_id.startswith(f"{CALL_SID}:speech:")
    assert first.provider_message_id != second.provider_message_id


def test_twilio_voicemail_transcription_is_a_callback_request() -> None:
    message = only_message(parse_twilio(form(TRANSCRIPTION), CONFIG))

    assert message.kind == "callback_request"
    assert message.callback_number == CALLER
    assert message.text.startswith("Hi, my withdrawal of 2 BTC is stuck")
    assert (
        message.provider_message_id
        == f"{CALL_SID}:transcription:RE0a1b2c3d4e5f60718293a4b5c6d7e8f9"
    )


def test_twilio_failed_transcription_still_asks_for_a_callback() -> None:
    failed = {**TRANSCRIPTION, "TranscriptionStatus": "failed"}
    del failed["TranscriptionText"]

    message = only_message(parse_twilio(form(failed), CONFIG))

    assert message.kind == "callback_request"
    assert message.callback_number == CALLER
    assert message.text == ""


def test_twilio_record_action_waits_for_the_transcription() -> None:
    record = {
        **TWILIO_BASE,
        "CallStatus": "completed",
        "RecordingUrl": TRANSCRIPTION["RecordingUrl"],
        "RecordingDuration": "12",
        "Digits": "hangup",
    }

    assert (
        only_skip(parse_twilio(form(record), CONFIG)) == "twilio: recording awaiting transcription"
    )


@pytest.mark.parametrize("status", ["no-answer", "busy", "failed", "canceled"])
def test_twilio_unanswered_call_is_a_callback_request(status: str) -> None:
    message = only_message(parse_twilio(form({**STATUS_COMPLETED, "CallStatus": status}), CONFIG))

    assert message.kind == "callback_request"
    assert message.callback_number == CALLER
    assert message.provider_message_id == f"{CALL_SID}:status:{status}"
    assert message.sent_at == datetime(2024, 5, 1, 12, 3, 4, tzinfo=UTC)


def test_twilio_caller_who_hung_up_in_the_queue_is_a_callback_request() -> None:
    dequeued = {
        **TWILIO_BASE,
        "CallStatus": "in-progress",
        "QueueResult": "hangup",
        "QueueSid": "QU1",
        "QueueTime": "312",
    }

    message = only_message(parse_twilio(form(dequeued), CONFIG))

    assert message.kind == "callback_request"
    assert message.provider_message_id == f"{CALL_SID}:queue:hangup"


def test_twilio_stages_of_one_call_have_distinct_ids_and_redelivery_the_same() -> None:
    stages = [GATHER, TRANSCRIPTION, {**STATUS_COMPLETED, "CallStatus": "no-answer"}]

    ids = [only_message(parse_twilio(form(stage), CONFIG)).provider_message_id for stage in stages]
    again = [
        only_message(parse_twilio(form(stage), CONFIG)).provider_message_id for stage in stages
    ]

    assert len(set(ids)) == 3
    assert ids == again


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (STATUS_COMPLETED, "twilio: call completed"),
        (TWILIO_BASE, "twilio: call in progress"),
        ({**TWILIO_BASE, "CallStatus": "in-progress"}, "twilio: call in progress"),
        (
            {**STATUS_COMPLETED, "CallStatus": "no-answer", "Direction": "outbound-api"},
            "twilio: outbound call",
        ),
        (
            {**STATUS_COMPLETED, "CallStatus": "no-answer", "From": "+266696687"},
            "twilio: missed call without caller id",
        ),
    ],
)
def test_twilio_webhooks_without_customer_content_are_skipped(
    fields: dict[str, str], reason: str
) -> None:
    assert only_skip(parse_twilio(form(fields), CONFIG)) == reason


def test_twilio_voicemail_from_a_hidden_number_is_a_plain_message() -> None:
    message = only_message(parse_twilio(form({**TRANSCRIPTION, "From": "+266696687"}), CONFIG))

    assert message.kind == "message"
    assert message.callback_number is None
    assert message.identities == ()
    assert message.conversation_key == f"call:{CALL_SID}"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"CallSid=CA1&From=%2B1415&CallSid=CA2", "twilio: duplicate field"),
        (b"CallSid=CA1&From=%ff%fe", "twilio: invalid form body"),
        ("CallSid=CA1&From=+1415é".encode(), "twilio: invalid form body"),
        (b"CallSid=CA1&&From", "twilio: invalid form body"),
        (b"&".join([b"k%d=v" % i for i in range(500)]), "twilio: invalid form body"),
        (b"From=%2B14155550100&CallStatus=no-answer", "twilio: invalid payload"),
        (b"CallSid=CA1%3Astatus%3Abusy&CallStatus=busy", "twilio: invalid payload"),
        (b"CallSid=CA1&Digits=2%3B+DROP", "twilio: invalid Digits"),
        (b"CallSid=CA1&From=%2B14155550100", "twilio: missing CallStatus"),
        (b"CallSid=CA1&CallStatus=busy&Timestamp=yesterday", "twilio: invalid Timestamp"),
    ],
)
def test_twilio_malformed_bodies_raise_parse_error(raw: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_twilio(raw, CONFIG)
    assert caught.value.reason == reason


# --- generic call log --------------------------------------------------------------------


def test_call_log_abandoned_call_is_a_callback_to_the_caller() -> None:
    message = only_message(parse_calllog(json.dumps(CALL_LOG).encode(), CONFIG))

    assert message.provider == "generic"
    assert message.kind == "callback_request"
    # Spaces and dashes go; the number stays E.164.
    assert message.callback_number == "+442079460018"
    assert message.identities == (Identity(kind="phone", value="+442079460018"),)
    assert message.conversation_key == "+442079460018"
    assert message.provider_message_id == "c-20240501-8812"
    assert message.sent_at == datetime(2024, 5, 1, 8, 30, tzinfo=UTC)
    # The last IVR step that maps wins: "2" (withdrawal) then "1" (deposit).
    assert message.category_hint == "deposit"


def test_call_log_voicemail_prefers_the_stated_callback_number() -> None:
    log = {
        **CALL_LOG,
        "disposition": "voicemail",
        "transcript": "Someone changed my 2FA\x07 and withdrew everything",
        "callback_number": "0044 7700 900123",
        "ivr_path": ["main", "9", "operator"],
    }

    message = only_message(parse_calllog(json.dumps(log).encode(), CONFIG))

    assert message.kind == "callback_request"
    assert message.callback_number == "+447700900123"
    assert message.text == "Someone changed my 2FA and withdrew everything"
    assert message.category_hint == "stolen_funds"


def test_call_log_answered_call_with_transcript_is_a_message() -> None:
    log = {
        **CALL_LOG,
        "disposition": "answered",
        "transcript": "Asked about trading fees",
        "ivr_path": [],
    }

    message = only_message(parse_calllog(json.dumps(log).encode(), CONFIG))

    assert message.kind == "message"
    assert message.callback_number is None
    assert message.category_hint is None


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"direction": "outbound", "disposition": "missed"}, "generic: outbound call"),
        ({"direction": "Outbound"}, "generic: outbound call"),
        ({"disposition": "answered"}, "generic: call without transcript or callback number"),
        ({"from": "anonymous"}, "generic: call without transcript or callback number"),
    ],
)
def test_call_log_calls_with_nothing_to_do_are_skipped(
    changes: dict[str, Any], reason: str
) -> None:
    assert only_skip(parse_calllog(json.dumps({**CALL_LOG, **changes}).encode(), CONFIG)) == reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"from": "+14155550100"}', "generic: invalid payload"),
        (b'{"call_id": ""}', "generic: invalid payload"),
        (b'{"call_id": {"$gt": ""}}', "generic: invalid payload"),
        (b'{"call_id": "c1", "direction": "sideways"}', "generic: invalid payload"),
        (
            b'{"call_id": "c1", "started_at": "9999-12-31T23:00:00-05:00"}',
            "generic: invalid payload",
        ),
        (b'{"call_id": "c1", "ivr_path": "21"}', "generic: invalid payload"),
        (b'"c1"', "generic: not an object"),
        (b"{'call_id': 'c1'}", "generic: invalid json"),
    ],
)
def test_call_log_malformed_records_raise_parse_error(raw: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_calllog(raw, CONFIG)
    assert caught.value.reason == reason


def test_call_log_naive_start_time_is_taken_as_utc() -> None:
    log = {**CALL_LOG, "started_at": "2024-05-01T09:30:00"}

    message = only_message(parse_calllog(json.dumps(log).encode(), CONFIG))

    assert message.sent_at == datetime(2024, 5, 1, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("parser", "raw"),
    [
        (parse_twilio, form(GATHER)),
        (parse_twilio, form(TRANSCRIPTION)),
        (parse_calllog, json.dumps(CALL_LOG).encode()),
    ],
)
def test_same_payload_twice_gives_the_same_ids(parser: Any, raw: bytes) -> None:
    assert parser(raw, CONFIG) == parser(raw, CONFIG)


# --- properties: hostile input only ever raises ParseError --------------------------------

JSON_VALUES = json_values(
    ["$where", {"$gt": ""}, "\x00\x1b[31m\u202e", "\ud800", 10**40, "+", "00", "", [], {}]
)
PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(raw=st.binary(max_size=300))
def test_random_bytes_only_raise_parse_error(raw: bytes) -> None:
    check_contract(parse_twilio, raw, CONFIG)
    check_contract(parse_calllog, raw, CONFIG)


@PROPERTY
@given(value=JSON_VALUES)
def test_random_json_only_raises_parse_error(value: Any) -> None:
    check_contract(parse_calllog, json.dumps(value).encode(), CONFIG)


FORM_VALUES = st.sampled_from(
    [
        "completed",
        "no-answer",
        "busy",
        "in-progress",
        "outbound-dial",
        "hangup",
        "+266696687",
        "$where",
        "1",
        "#",
    ]
) | st.text(max_size=20)


@PROPERTY
@given(
    base=st.sampled_from([GATHER, TRANSCRIPTION, STATUS_COMPLETED]),
    dropped=st.sets(st.sampled_from(sorted(TRANSCRIPTION))),
    changed=st.dictionaries(
        st.sampled_from(
            [*sorted(TRANSCRIPTION), "Digits", "SpeechResult", "QueueResult", "Timestamp", "x"]
        ),
        FORM_VALUES,
    ),
)
def test_mutated_twilio_forms_only_raise_parse_error(
    base: dict[str, str], dropped: set[str], changed: dict[str, str]
) -> None:
    fields = {key: value for key, value in base.items() if key not in dropped} | changed
    raw = urlencode(fields, encoding="utf-8", errors="surrogatepass").encode()
    check_contract(parse_twilio, raw, CONFIG)


@PROPERTY
@given(
    dropped=st.sets(st.sampled_from(sorted(CALL_LOG))),
    changed=st.dictionaries(st.sampled_from([*sorted(CALL_LOG), "$where"]), JSON_VALUES),
)
def test_mutated_call_logs_only_raise_parse_error(
    dropped: set[str], changed: dict[str, Any]
) -> None:
    log = {key: value for key, value in CALL_LOG.items() if key not in dropped} | changed
    check_contract(parse_calllog, json.dumps(log).encode(), CONFIG)
