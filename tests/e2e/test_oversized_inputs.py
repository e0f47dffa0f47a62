"""Oversized and malformed input gets a clear answer: never a crash, a stuck consumer or a
memory blowup.

The limits, by path:
- Webhooks (`POST /v1/inbound/{channel}/{provider}`): a body over `max_body_bytes`
  (1 MiB), or too large to forward to Kafka, is refused with 413 and nothing is
  published; a body no parser can read gets 422 with the parser's reason; a readable one
  gets 202 and its text is cut to `max_text_chars` (20,000, policy/ingest.yaml).
- Adapters' records on `support.inbound.*` (no HTTP limit in front): a payload over
  1 MiB (chat, social, phone: the webhooks' own limit) or 25 MiB (email, attachments
  included) is dead-lettered unread as "payload too large", with its payload and key cut
  to size; an unreadable one is dead-lettered with the parser's reason; a readable one
  becomes a message, its text cut to `max_text_chars`.

The inputs: a 1 MB chat message, an email to 5,000 recipients, JSON nested 10,000 deep,
invalid UTF-8 in JSON and in an email body that is not in its declared charset, and an
email of 10,000 nested MIME parts (which the stdlib parser needs half a minute for).
Ingest's memory is read from /proc: the resident set must not keep what a burst of such
payloads brought, and its peak must stay far below a payload-sized blowup.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from omniroute.system import DEV_SECRET, LocalSystem
from services.ingest.http import SIGNATURE_HEADER, sign
from shared.embedded import EmbeddedStack
from shared.ids import message_id
from shared.topics import DEADLETTER, INBOUND_CHAT, INBOUND_EMAIL, MESSAGES
from tests.support.kafka import read_all
from tests.support.procs import alive
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

MIB = 1_048_576
MAX_TEXT_CHARS = 20_000
DEADLINE_S = 90
NESTED_JSON = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
# What ingest's resident set may keep of two bursts (~80 MB read by its consumer), and
# how far above that starting point it may peak while reading them. Here it keeps 0-25
# MiB (the allocator's reuse: it moves up and down from burst to burst) and peaks as
# much; keeping the payloads read breaks the first bound (82 MiB when tried), a reader
# that holds some fifty times a 2 MB payload at once breaks the second.
MAX_GROWTH_BYTES = 48 * MIB
MAX_PEAK_BYTES = 96 * MIB


# -- payloads ----------------------------------------------------------------------------


def chat(session: str, text: str) -> bytes:
    return json.dumps(
        {
            "session_id": session,
            "message_id": "m1",
            "sent_at": "2026-11-20T12:00:00Z",
            "visitor": {"id": f"v-{session}", "name": "Big Talker", "locale": "en-US"},
            "text": text,
        },
        ensure_ascii=False,
    ).encode()


def chat_of_size(session: str, size: int) -> bytes:
    """A generic chat message whose body is `size` bytes, nearly all of it text."""
    envelope = len(chat(session, ""))
    return chat(
        session, ("My withdrawal is stuck since Monday. " * (size // 30 + 1))[: size - envelope]
    )


def chat_id(session: str) -> str:
    return message_id("generic", f"{session}:m1")


def mail(tag: str, headers: str, body: bytes) -> bytes:
    """A mail from a customer; a text/plain UTF-8 body unless `headers` say otherwise."""
    head = (
        f'From: "Customer" <{tag}@example.com>\r\n'
        f"{headers}"
        "Subject: =?utf-8?B?6LWE5Lqn6KKr55uX?=\r\n"  # 资产被盗
        f"Message-ID: <{tag}@mail.example.com>\r\n"
        "MIME-Version: 1.0\r\n"
    )
    if "content-type" not in headers.lower():
        head += "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
    return head.encode() + b"\r\n" + body + b"\r\n"


def mail_id(tag: str) -> str:
    return message_id("smtp", f"{tag}@mail.example.com")


def many_recipients(tag: str) -> bytes:
    everyone = ", ".join(f'"Person {i}" <p{i}-{tag}@example.com>' for i in range(5_000))
    return mail(tag, f"To: {everyone}\r\nCc: {everyone}\r\n", b"My withdrawal is stuck")


def wrong_charset(tag: str, stray: bytes = b"") -> bytes:
    # Labelled UTF-8, written in GBK (as some Chinese mail clients do); maybe stray bytes.
    body = "我的资产被盗了".encode("gbk") + stray
    return mail(tag, "To: support@exchange.example\r\n", body)


def nested_parts(tag: str) -> bytes:
    part = b"--b\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    return mail(tag, "Content-Type: multipart/mixed; boundary=b\r\n", part * 10_000)


def invalid_utf8_json(session: str) -> bytes:
    return chat(session, "XXXX").replace(b"XXXX", b"my \xff\xfe\xc3( account")


# -- plumbing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Produced:
    label: str
    topic: str
    partition: int
    offset: int


async def produce(
    bootstrap: str, items: list[tuple[str, str, bytes, bytes, str]]
) -> list[Produced]:
    """(label, topic, key, value, provider header) records, as an adapter publishes them."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=8 * MIB)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=key, headers=[("provider", provider.encode())])
            for _, topic, key, value, provider in items
        ]
        metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [
        Produced(label, m.topic, m.partition, m.offset)
        for (label, *_), m in zip(items, metas, strict=True)
    ]


def post(client: httpx.Client, path: str, body: bytes) -> httpx.Response:
    return client.post(path, content=body, headers={SIGNATURE_HEADER: sign(DEV_SECRET, body)})


def dead_letters(system: LocalSystem) -> dict[tuple[str, int, int], dict[str, Any]]:
    found = {}
    for r in asyncio.run(read_all(system.stack.kafka_bootstrap, [DEADLETTER])):
        letter = json.loads(r.value)
        if letter["service"] == "ingest" and letter.get("source_topic"):
            found[(letter["source_topic"], letter["source_partition"], letter["source_offset"])] = (
                letter
            )
    return found


def messages(system: LocalSystem, ids: list[str]) -> dict[str, dict[str, Any]]:
    wanted = set(ids)
    found = {}
    for r in asyncio.run(read_all(system.stack.kafka_bootstrap, [MESSAGES])):
        ce_id = dict(r.headers)["ce_id"].decode()
        if ce_id in wanted:
            found[ce_id] = json.loads(r.value)
    return found


def wait_for_tickets(db: Any, ids: list[str], what: str) -> None:
    def ticketed() -> bool:
        found = db.tickets.find({"message_ids": {"$in": ids}}, {"message_ids": 1})
        return {m for t in found for m in t["message_ids"]} >= set(ids)

    wait_until(ticketed, DEADLINE_S, what)


def check_texts(texts: dict[str, str], ids: list[str]) -> None:
    big, recipients, charset, stray = ids
    assert len(texts[big]) == MAX_TEXT_CHARS
    assert texts[recipients] == "My withdrawal is stuck"
    # Read as what it is (GB18030 covers GBK), not as the label says.
    assert texts[charset] == "我的资产被盗了"
    # No reading of the whole body is clean: the declared charset's, bytes replaced.
    assert "\ufffd" in texts[stray]


def memory_bytes(pid: int, field: str) -> int:
    """VmRSS (resident now) or VmHWM (resident at the peak) of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def reset_peak(pid: int) -> bool:
    """Start VmHWM again from the current resident set (Linux 4.0+, our own child)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    """A broker and store of this module's own: Tansu keeps records in memory, and the
    100-odd MB of large payloads written here need not stay for the rest of the session."""
    with EmbeddedStack(data_dir=tmp_path_factory.mktemp("oversized-stack")) as running:
        yield running


@pytest.fixture(scope="module")
def client(system: LocalSystem) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=system.url("ingest"), timeout=30) as running:
        yield running


# -- tests -------------------------------------------------------------------------------


def test_webhooks_answer_every_oversized_or_malformed_body(
    system: LocalSystem, client: httpx.Client, db: Any
) -> None:
    run = uuid.uuid4().hex[:8]
    chat_path, mail_path = "/v1/inbound/chat/generic", "/v1/inbound/email/smtp"

    # Refused whole: over the limit, or at it and too large to forward to Kafka.
    for size in (2 * MIB, MIB):
        reply = post(client, chat_path, chat_of_size(f"{run}-big{size}", size))
        assert reply.status_code == 413, (size, reply.text)
        assert "too large" in reply.json()["error"]

    # Unreadable: 422 and the parser's reason.
    unreadable = {
        "generic: invalid json": (chat_path, NESTED_JSON),
        "generic: not utf-8": (chat_path, invalid_utf8_json(f"{run}-utf8")),
        "email: too many parts": (mail_path, nested_parts(f"{run}-parts")),
    }
    for reason, (path, body) in unreadable.items():
        started = time.monotonic()
        reply = post(client, path, body)
        assert (reply.status_code, reply.json()) == (422, {"error": reason})
        assert time.monotonic() - started < 5, reason

    # Readable: accepted, the text cut to the policy's length.
    accepted = {
        chat_id(f"{run}-1mb"): chat_of_size(f"{run}-1mb", 1_000_000),
        mail_id(f"{run}-rcpt"): many_recipients(f"{run}-rcpt"),
        mail_id(f"{run}-charset"): wrong_charset(f"{run}-charset"),
        mail_id(f"{run}-stray"): wrong_charset(f"{run}-stray", b" \xff\xfe\x80"),
    }
    for mid, body in accepted.items():
        path = chat_path if body.startswith(b"{") else mail_path
        reply = post(client, path, body)
        assert reply.status_code == 202, reply.text
        assert reply.json()["message_ids"] == [mid]
    ids = list(accepted)
    wait_for_tickets(db, ids, "a ticket for every accepted webhook")
    texts = {mid: m["text"] for mid, m in messages(system, ids).items()}
    check_texts(texts, ids)

    # Nothing refused or unreadable reached Kafka.
    sessions = [f"{run}-big{2 * MIB}".encode(), f"{run}-big{MIB}".encode(), f"{run}-utf8".encode()]
    inbound = asyncio.run(read_all(system.stack.kafka_bootstrap, [INBOUND_CHAT, INBOUND_EMAIL]))
    assert not [r.offset for r in inbound if any(s in (r.value or b"") for s in sessions)]
    assert not [r.offset for r in inbound if f"{run}-parts".encode() in (r.value or b"")]


def test_adapters_oversized_or_malformed_payloads_are_dead_lettered_or_cut(
    system: LocalSystem, db: Any
) -> None:
    run = uuid.uuid4().hex[:8]
    # (label, topic, key, value, provider)
    dead = {
        "payload too large": (
            INBOUND_CHAT,
            b"k" * 600_000,
            chat_of_size(f"{run}-2mb", 2 * MIB),
            "generic",
        ),
        "generic: invalid json": (INBOUND_CHAT, b"nested", NESTED_JSON, "generic"),
        "generic: not utf-8": (INBOUND_CHAT, b"utf8", invalid_utf8_json(f"{run}-utf8"), "generic"),
        "email: too many parts": (INBOUND_EMAIL, b"parts", nested_parts(f"{run}-parts"), "smtp"),
    }
    accepted = {
        chat_id(f"{run}-1mb"): (
            INBOUND_CHAT,
            b"1mb",
            chat_of_size(f"{run}-1mb", 1_000_000),
            "generic",
        ),
        mail_id(f"{run}-rcpt"): (INBOUND_EMAIL, b"rcpt", many_recipients(f"{run}-rcpt"), "smtp"),
        mail_id(f"{run}-charset"): (INBOUND_EMAIL, b"cs", wrong_charset(f"{run}-charset"), "smtp"),
        mail_id(f"{run}-stray"): (
            INBOUND_EMAIL,
            b"stray",
            wrong_charset(f"{run}-stray", b" \xff\xfe\x80"),
            "smtp",
        ),
    }
    items = [(label, *record) for label, record in (dead | accepted).items()]
    produced = {p.label: p for p in asyncio.run(produce(system.stack.kafka_bootstrap, items))}

    def all_dead() -> dict[str, dict[str, Any]]:
        letters = dead_letters(system)
        found = {
            reason: letters[(p.topic, p.partition, p.offset)]
            for reason, p in produced.items()
            if reason in dead and (p.topic, p.partition, p.offset) in letters
        }
        return found if len(found) == len(dead) else {}

    letters = wait_until(all_dead, DEADLINE_S, "a dead letter for every unreadable payload")
    for reason, letter in letters.items():
        assert letter["reason"] == reason
        assert len(letter["payload"]) <= 65_536
    too_large = letters["payload too large"]
    assert too_large["payload_truncated"] is True
    assert too_large["payload"].startswith('{"session_id"')
    assert too_large["key"] == "k" * 256

    ids = list(accepted)
    wait_for_tickets(db, ids, "a ticket for every readable payload")
    texts = {mid: m["text"] for mid, m in messages(system, ids).items()}
    check_texts(texts, ids)


def burst(system: LocalSystem, client: httpx.Client, db: Any, run: str) -> None:
    """45 large payloads by webhook and by Kafka: ~40 MB read by ingest's consumer (the
    accepted webhooks' bodies pass through Kafka too); returns when each has its ticket
    or dead letter."""
    ids: list[str] = []
    for n in range(10):
        body = chat_of_size(f"{run}-h{n}", 1_000_000)
        assert post(client, "/v1/inbound/chat/generic", body).status_code == 202
        ids.append(chat_id(f"{run}-h{n}"))
        refused = chat_of_size(f"{run}-x{n}", 2 * MIB)
        assert post(client, "/v1/inbound/chat/generic", refused).status_code == 413
    items: list[tuple[str, str, bytes, bytes, str]] = []
    for n in range(5):
        items += [
            (f"1mb {n}", INBOUND_CHAT, b"1mb", chat_of_size(f"{run}-k{n}", 1_000_000), "generic"),
            (f"2mb {n}", INBOUND_CHAT, b"2mb", chat_of_size(f"{run}-d{n}", 2 * MIB), "generic"),
            (f"2mb+ {n}", INBOUND_CHAT, b"2mb", chat_of_size(f"{run}-e{n}", 2 * MIB), "generic"),
            (f"nested {n}", INBOUND_CHAT, b"nested", NESTED_JSON * 10, "generic"),
            (f"rcpt {n}", INBOUND_EMAIL, b"rcpt", many_recipients(f"{run}-r{n}"), "smtp"),
        ]
        ids += [chat_id(f"{run}-k{n}"), mail_id(f"{run}-r{n}")]
    produced = asyncio.run(produce(system.stack.kafka_bootstrap, items))
    wait_for_tickets(db, ids, "a ticket for every message of the burst")
    dead = [p for p in produced if not p.label.startswith(("1mb", "rcpt"))]
    wait_until(
        lambda: all((p.topic, p.partition, p.offset) in dead_letters(system) for p in dead),
        DEADLINE_S,
        "a dead letter for every unreadable payload of the burst",
    )


def test_bursts_of_large_payloads_leave_ingest_memory_bounded(
    system: LocalSystem, client: httpx.Client, db: Any
) -> None:
    pid = system.services["ingest"].proc.pid  # type: ignore[union-attr]
    run = uuid.uuid4().hex[:8]
    # A first burst takes every code path once and lets the allocator reach its working
    # size (CPython and malloc keep freed memory for reuse); then the baseline.
    burst(system, client, db, f"{run}-warm")
    baseline = memory_bytes(pid, "VmRSS")
    peak_tracked = reset_peak(pid)

    burst(system, client, db, f"{run}-1")
    burst(system, client, db, f"{run}-2")

    growth = memory_bytes(pid, "VmRSS") - baseline
    assert growth < MAX_GROWTH_BYTES, f"ingest kept {growth / MIB:.0f} MiB of ~80 MB read"
    if peak_tracked:
        peak = memory_bytes(pid, "VmHWM") - baseline
        assert peak < MAX_PEAK_BYTES, f"ingest peaked {peak / MIB:.0f} MiB above its baseline"


def test_after_all_of_it_a_normal_message_still_flows(
    system: LocalSystem, client: httpx.Client, db: Any
) -> None:
    run = uuid.uuid4().hex[:8]
    body = chat(f"{run}-hook", "I cannot log in, 2FA lost")
    assert post(client, "/v1/inbound/chat/generic", body).status_code == 202
    items = [
        ("kafka", INBOUND_CHAT, b"normal", chat(f"{run}-kafka", "deposit not credited"), "generic")
    ]
    asyncio.run(produce(system.stack.kafka_bootstrap, items))
    wait_for_tickets(
        db, [chat_id(f"{run}-hook"), chat_id(f"{run}-kafka")], "tickets for normal messages"
    )
    for svc in system.services.values():
        assert svc.proc is not None and svc.proc.poll() is None, svc.name
        assert alive(svc.proc.pid), svc.name
    assert client.get("/readyz").status_code == 200
