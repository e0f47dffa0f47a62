"""A dead letter costs the same whatever the size of what it parks, and always fits a record.

Dead-lettering used to decode and scrub the whole payload before cutting it to 64 KiB: a
2 MB payload took ~30 s and ~200 MB, long enough for the consumer to miss its
heartbeats and meet the same record again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pytest
from mnemonic import Mnemonic

from services.ingest.redact import scrub
from shared.contracts.deadletter import MAX_PAYLOAD_CHARS, DeadLettered
from shared.deadletter import MAX_KEY_CHARS, dead_letter
from shared.events import NotACloudEvent, envelope_of
from tests.support.factories import T0

PHRASE = Mnemonic("english").to_mnemonic(bytes(range(16)))


@dataclass
class Record:
    topic: str = "support.inbound.chat"
    partition: int = 0
    offset: int = 7
    key: bytes | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()


def letter_of(payload: bytes, record: Record | None = None) -> DeadLettered:
    event = dead_letter(
        service="ingest", reason="x", payload=payload, now=T0, scrub=scrub, record=record
    )
    return DeadLettered.model_validate_json(event.value)


def test_a_large_payload_is_parked_by_its_start_quickly() -> None:
    scrub("warm up the word lists")
    payload = json.dumps({"text": "资产被盗 my account was hacked " * 200_000}).encode()
    started = time.perf_counter()
    letter = letter_of(payload)
    assert time.perf_counter() - started < 3.0  # ~0.3 s here; reading all of 2 MB took ~30 s
    assert letter.payload_truncated
    assert len(letter.payload) == MAX_PAYLOAD_CHARS
    assert payload.decode().startswith(letter.payload)


def test_a_secret_across_the_cut_is_still_redacted() -> None:
    start = MAX_PAYLOAD_CHARS - len(PHRASE) // 2
    payload = ("x" * (start - 1) + " " + PHRASE + " " + "y" * 3_000_000).encode()
    letter = letter_of(payload)
    assert letter.payload_truncated
    assert PHRASE.split()[0] not in letter.payload.split()
    assert "[REDACTED:seed_phrase]" in letter.payload


def test_a_payload_just_over_the_limit_is_marked_truncated() -> None:
    assert letter_of(b"a" * (MAX_PAYLOAD_CHARS + 10)).payload_truncated
    assert not letter_of(b"a" * MAX_PAYLOAD_CHARS).payload_truncated
    # Four bytes a character: under the limit in characters, far over it in bytes.
    assert not letter_of("𝄞".encode() * MAX_PAYLOAD_CHARS).payload_truncated


def test_the_key_is_cut_so_the_letter_fits_a_record() -> None:
    letter = letter_of(b"{}", Record(key=b"k" * 2_000_000))
    assert letter.key == "k" * MAX_KEY_CHARS
    event = dead_letter(
        service="ingest", reason="x", payload=b"\0" * 10_000_000, now=T0, provider="p" * 10**6
    )
    assert len(event.value) < 512 * 1024  # "\u0000" is six bytes in JSON


def test_a_record_with_type_and_id_has_an_envelope() -> None:
    assert envelope_of(Record(headers=(("ce_type", b"t"), ("ce_id", b"i")))).id == "i"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ((("ce_id", b"i"),), "missing ce_type"),
        ((("ce_type", b"t"),), "missing ce_id"),
        ((("ce_type", b"t"), ("ce_id", b"")), "missing ce_id"),
        ((("ce_type", None), ("ce_id", b"i")), "missing ce_type"),
    ],
)
def test_a_record_without_type_or_id_is_not_a_cloudevent(
    headers: tuple[tuple[str, bytes | None], ...], reason: str
) -> None:
    with pytest.raises(NotACloudEvent) as caught:
        envelope_of(Record(headers=headers))
    assert caught.value.reason == reason
