"""Dead-letter payloads are raw provider bytes: secrets in their transport encodings go too.

`services.ingest.handlers.scrub` runs on the payload of every dead letter ingest writes;
these payloads are, by definition, ones no parser could read, so the secret is wherever
the provider's encoding put it.
"""

from __future__ import annotations

import base64
import json
import quopri
import re
from email import message_from_string, policy
from urllib.parse import unquote_plus, urlencode

import pytest
from mnemonic import Mnemonic

from services.ingest.redact import scrub
from shared.contracts.deadletter import DeadLettered
from tests.support.factories import T0

EN = Mnemonic("english").to_mnemonic(bytes(range(16)))
ZH = Mnemonic("chinese_simplified").to_mnemonic(bytes(range(16, 32)))
HEX_KEY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
TEXT = (
    f"seed: {EN}\n助记词：{ZH.replace(' ', '')}\nprivate key: {HEX_KEY}\nmy password is Hunter22!"
)


def views(text: str) -> list[str]:
    """The text as stored, and as each transport encoding would decode it."""
    found = [text, unquote_plus(text), re.sub(r"\\u([0-9a-f]{4})", _char, text)]
    found.append(re.sub(r"\\n", " ", text))
    found.append(quopri.decodestring(text.encode("utf-8", "replace")).decode("utf-8", "replace"))
    message = message_from_string(text, policy=policy.default)
    found += [f"{name}: {value}" for name, value in message.items()]
    body = message.get_payload(decode=True)
    if isinstance(body, bytes):
        found.append(body.decode("utf-8", "replace"))
    return found


def _char(match: re.Match[str]) -> str:
    return chr(int(match[1], 16))


def assert_clean(scrubbed: str) -> None:
    words, chars = EN.split(), ZH.split()
    for view in views(scrubbed):
        for start in range(len(words) - 3):
            assert " ".join(words[start : start + 4]) not in view
            assert "".join(chars[start : start + 4]) not in view
        assert HEX_KEY not in view
        assert "Hunter22" not in view
    assert "[REDACTED:seed_phrase]" in scrubbed
    # Still a publishable dead letter (no lone surrogates).
    DeadLettered(reason="r", service="ingest", payload=scrubbed, at=T0).model_dump_json()


def mail(transfer: str, body: str, subject: str = "help") -> str:
    return (
        f"Subject: {subject}\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: {transfer}\r\n"
        f"\r\n{body}"
    )


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(json.dumps({"session_id": 1, "text": TEXT}, ensure_ascii=False), id="json"),
        pytest.param(json.dumps({"session_id": 1, "text": TEXT}), id="json-ascii-escapes"),
        pytest.param(json.dumps({"text": TEXT.replace(" ", "\n")})[:-3], id="json-cut-newlines"),
        pytest.param(urlencode({"CallSid": "CA1", "TranscriptionText": TEXT}), id="form"),
        pytest.param(mail("base64", base64.encodebytes(TEXT.encode()).decode()), id="mime-base64"),
        pytest.param(
            mail("quoted-printable", quopri.encodestring(TEXT.encode()).decode()),
            id="mime-quoted-printable",
        ),
        pytest.param(
            mail("7bit", "no sender", f"=?utf-8?B?{base64.b64encode(TEXT.encode()).decode()}?="),
            id="encoded-word-subject",
        ),
    ],
)
def test_secrets_are_removed_whatever_the_encoding(payload: str) -> None:
    assert_clean(scrub(payload))


def test_a_payload_without_secrets_is_kept_as_it_came() -> None:
    # Decoded views are only used when they reveal a secret.
    payloads = [
        json.dumps({"text": "充值未到账 \ud800", "n": "a+b%20c"}),
        mail("base64", base64.encodebytes("提现一直卡住".encode()).decode()),
        "\ufffd not json {",
    ]
    for payload in payloads:
        assert scrub(payload) == payload


def test_lone_surrogate_escapes_beside_a_secret_become_replacement_characters() -> None:
    payload = json.dumps({"text": f"\ud800 助记词：{ZH.replace(' ', '')}"})

    scrubbed = scrub(payload)

    assert "\ufffd" in scrubbed
    assert "[REDACTED:seed_phrase]" in scrubbed
    DeadLettered(reason="r", service="ingest", payload=scrubbed, at=T0).model_dump_json()


def test_the_check_sees_encoded_secrets() -> None:
    for encoded in (
        json.dumps(TEXT),
        urlencode({"t": TEXT}),
        mail("base64", base64.encodebytes(TEXT.encode()).decode()),
        mail("quoted-printable", quopri.encodestring(TEXT.encode()).decode()),
    ):
        with pytest.raises(AssertionError):
            assert_clean(encoded + " [REDACTED:seed_phrase]")


def test_broken_mime_with_a_secret_still_loses_the_secret() -> None:
    # An unknown charset in an encoded word and a body that is not base64: no crash.
    payload = mail("base64", "!!!not base64!!! " + TEXT, subject="=?unknown-8?B?AAAA?=")

    assert_clean(scrub(payload))
