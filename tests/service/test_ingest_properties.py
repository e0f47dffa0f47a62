"""Properties of ingest's two entry points under arbitrary, hostile input.

* The Kafka consumer path (`Ingestor.process`): whatever a batch holds, nothing escapes;
  every good message comes out as exactly one `support.messages` event and every bad
  payload as exactly one dead letter with its reason; neighbours never affect each other.
* The webhook (`make_routes`): any body and signature gets 202/400/401/404/413/422,
  never a 5xx, and the raw payload is published only with a 202.

Payloads are good by construction (every shape of tests/support/payloads.py, with or
without the `provider` header), bad by construction, or mutated at random; for mutated
ones, `prepare` run on that payload alone says what the batch must do with it.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from starlette.applications import Starlette

from services.ingest.handlers import Ingestor
from services.ingest.http import SIGNATURE_HEADER, make_routes, sign
from services.ingest.intake import Inbound
from services.ingest.metrics import IngestMetrics
from services.ingest.model import ParseError, Skipped
from services.ingest.pipeline import Prepared, load_policy, prepare
from shared.access import Access
from shared.audit import MemoryAuditLog
from shared.contracts.common import PROVIDERS_BY_CHANNEL, Channel
from shared.contracts.deadletter import DeadLettered
from shared.contracts.messages import MessageReceived
from shared.settings import REPO_POLICY_DIR, IngestSettings
from shared.topics import CUSTOMERS, DEADLETTER, INBOUND_BY_CHANNEL, MESSAGES
from tests.support.classifier import classify_policy, text_model
from tests.support.fakes import FakeCustomerStore, FakeTrainingStore, Record
from tests.support.mutations import json_values, mutate
from tests.support.payloads import SHAPES, Shape

POLICY = load_policy(REPO_POLICY_DIR / "ingest.yaml")
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
PROPERTY = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
JSON_SHAPES = tuple(s for s in SHAPES if s.provider in ("x", "telegram", "chatwoot", "generic"))

# --- what goes in ---------------------------------------------------------------------

HOSTILE_TEXT = [
    "$where",
    '{"$gt": ""}',
    "'; db.dropDatabase(); //",
    "\x00\x01\x1b[2J\x7f\x9f",
    "\u202eevil\u202c \u200b\ufeff",
    "<script>alert(1)</script> ]]> <![CDATA[",
    "%00%ff%c3%28 \\u0000 \\ud800",
    "提现 withdrawal 混合 ﾃｽﾄ 😀 𝔘𝔫𝔦",
    "A" * 3000,
]
HOSTILE_VALUES: list[Any] = [
    "$where",
    {"$gt": ""},
    {"$ne": None},
    {"$where": "sleep(1000)"},
    "\x00\x1b[31m\u202e",
    "\ud800",
    10**40,
    -1,
    True,
    None,
    "",
    [],
    {},
    json.loads("[" * 40 + "]" * 40),  # deep, but within what a JSON parser accepts
]
TEXT = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=80),
    st.lists(st.sampled_from(HOSTILE_TEXT), min_size=1, max_size=3).map(" ".join),
).map(lambda t: f"help {t}")  # never blank: a blank message is skipped, not published
JSON_VALUES = json_values(HOSTILE_VALUES, max_text=12, max_leaves=10)
# The id a provider payload cannot do without, per JSON shape.
REQUIRED_ID: dict[str, tuple[str | int, ...]] = {
    "x-dm": ("direct_message_events", 0, "id"),
    "x-mention": ("tweet_create_events", 0, "id_str"),
    "telegram": ("update_id",),
    "call-log": ("call_id",),
    "chatwoot": ("id",),
    "chat": ("session_id",),
}
# Never a valid id: an operator object, a control character, nothing, a boolean, a list.
BAD_IDS: list[Any] = [{"$gt": ""}, {"$where": "1"}, "\x00", "", "   ", None, True, []]


@dataclass(frozen=True)
class Item:
    kind: str  # "good", "bad" or "mutated"
    channel: Channel
    provider: str | None
    raw: bytes
    shape: Shape | None = None
    n: int = 0


@st.composite
def good(draw: st.DrawFn, n: int) -> Item:
    shape = draw(st.sampled_from(SHAPES))
    provider = draw(st.sampled_from([shape.provider, None]))  # None: sniffed
    return Item("good", shape.channel, provider, shape.build(n, draw(TEXT)), shape, n)


@st.composite
def bad(draw: st.DrawFn, n: int) -> Item:
    shape = draw(st.sampled_from(SHAPES))
    raw = shape.build(n, "help")
    ch, provider = shape.channel, shape.provider
    case = draw(st.integers(0, 7))
    if shape.channel == "email":
        # Email is read leniently: only nothing at all, or no sender, is not an email.
        raw = draw(
            st.sampled_from([b"", b"\r\n \r\n", b"Subject: hi\r\n\r\nno sender", b"\xc3\x28"])
        )
    elif case == 0:
        raw = b"\xc3\x28" + raw  # invalid UTF-8 before the payload
    elif case == 1 and shape.provider != "twilio":
        raw = shape.build(n, "help é naïve").decode().encode("latin-1", "replace")
    elif case == 2:
        raw = b"[" * 50_000 if shape.provider != "wechat" else b"<xml>" + b"<a>" * 50_000
    elif case == 3 and shape.name in REQUIRED_ID:
        data = json.loads(raw)
        *path, last = REQUIRED_ID[shape.name]
        target = data
        for step in path:
            target = target[step]
        target[last] = copy.deepcopy(draw(st.sampled_from(BAD_IDS)))
        raw = json.dumps(data).encode()
    elif case == 4:
        provider = draw(st.sampled_from(["smtp", "nope", "X", "generic "]))
        if provider in PROVIDERS_BY_CHANNEL[ch]:
            provider = "nope"
    elif case == 5:
        provider, raw = None, draw(st.sampled_from([b"<html>hi</html>", b"hello", b'{"a": 1}']))
    elif case == 6 and shape.provider == "wechat":
        raw = b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "aaaa">]><xml>&a;</xml>'
    elif case == 6 and shape.provider == "twilio":
        raw += b"&CallSid=CA1"  # parameter pollution
    else:
        raw = json.dumps(draw(st.sampled_from([[], "str", 1, None]))).encode()
        if shape.provider in ("wechat", "twilio"):
            raw = b"\x00\x01\x02"
    return Item("bad", ch, provider, raw, None, n)


@st.composite
def mutated(draw: st.DrawFn, n: int) -> Item:
    shape = draw(st.sampled_from(SHAPES))
    provider = draw(st.sampled_from([shape.provider, None]))
    raw = shape.build(n, draw(TEXT))
    if shape in JSON_SHAPES and draw(st.booleans()):
        data = json.loads(raw)
        mutate(draw, data, JSON_VALUES)
        # ASCII escapes let lone surrogates reach the parser, as they can on the wire.
        raw = json.dumps(data, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    else:
        data_bytes = bytearray(raw)
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(data_bytes)))
            action = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "splice"]))
            if action == "flip" and at < len(data_bytes):
                data_bytes[at] ^= draw(st.integers(1, 255))
            elif action == "insert":
                data_bytes[at:at] = draw(st.binary(min_size=1, max_size=8))
            elif action == "delete":
                del data_bytes[at : at + draw(st.integers(1, 16))]
            elif action == "truncate":
                del data_bytes[at:]
            else:
                # Mixed encodings: GBK or Big5 bytes inside a UTF-8 (or ASCII) payload.
                encoding = draw(st.sampled_from(["gbk", "big5", "utf-16-le", "latin-1"]))
                data_bytes[at:at] = "资产被盗 é".encode(encoding, "replace")
        raw = bytes(data_bytes)
    return Item("mutated", shape.channel, provider, raw, shape, n)


@st.composite
def batches(draw: st.DrawFn) -> list[Item]:
    size = draw(st.integers(1, 8))
    # Numbers unique in the batch (and well away from small integers a mutation writes).
    base = draw(st.integers(10_000, 10**9))
    return [draw(st.one_of(good(base + i), bad(base + i), mutated(base + i))) for i in range(size)]


# --- the consumer path ------------------------------------------------------------------


def oracle(item: Item) -> list[str] | str:
    """What this payload alone gives: its message ids, or the reason it cannot be read."""
    try:
        results = prepare(item.channel, item.provider, item.raw, POLICY.parser)
    except ParseError as exc:
        return exc.reason
    return [r.message_id for r in results if isinstance(r, Prepared)]


def make_ingestor() -> Ingestor:
    return Ingestor(
        customers=FakeCustomerStore(),
        rules=classify_policy(),
        model=text_model(),
        texts=FakeTrainingStore(),
        policy=POLICY,
        metrics=IngestMetrics.create(CollectorRegistry()),
        clock=lambda: NOW,
    )


@PROPERTY
@given(batch=batches())
def test_a_batch_gives_one_event_per_good_message_and_one_dead_letter_per_bad_one(
    batch: list[Item],
) -> None:
    inbound = [
        Inbound(
            i.channel,
            i.provider,
            i.raw,
            Record(topic=INBOUND_BY_CHANNEL[i.channel], value=i.raw, offset=offset),
        )
        for offset, i in enumerate(batch)
    ]
    events = asyncio.run(make_ingestor().process(inbound))

    expected = [oracle(i) for i in batch]
    published = [e for e in events if e.topic == MESSAGES]
    dead = [e for e in events if e.topic == DEADLETTER]
    announced = [e for e in events if e.topic == CUSTOMERS]  # customers first seen
    assert len(published) + len(dead) + len(announced) == len(events)
    # A fresh store: each customer of a published message is announced once, at version 1.
    bodies = [json.loads(e.value) for e in published]
    customers = {m["customer_id"] for m in bodies if m["identities"]}  # none: anonymous
    assert sorted(e.key for e in announced) == sorted(customers)
    assert {json.loads(e.value)["version"] for e in announced} <= {1}

    # One event per distinct good message; its CloudEvent id is the message id.
    ids = Counter(e.id for e in published)
    wanted = {mid for outcome in expected if isinstance(outcome, list) for mid in outcome}
    assert set(ids) == wanted
    assert all(count == 1 for count in ids.values()), ids
    for item in batch:
        if item.kind == "good":
            assert item.shape is not None
            assert item.shape.message_id(item.n) in ids
    for event in published:
        message = MessageReceived.model_validate_json(event.value)
        assert message.message_id == event.id == event.headers["ce_subject"]
        assert event.key == message.conversation_id
        assert message.received_at == NOW

    # One dead letter per unreadable payload, pointing at it, with the parser's reason.
    letters = {
        d.source_offset: d for d in (DeadLettered.model_validate_json(e.value) for e in dead)
    }
    assert len(letters) == len(dead)
    unreadable = {offset: o for offset, o in enumerate(expected) if isinstance(o, str)}
    assert {offset: d.reason for offset, d in letters.items()} == unreadable
    for offset, letter in letters.items():
        item = batch[offset]
        assert item.kind != "good", letter.reason
        assert letter.reason
        assert not letter.reason.startswith("internal")
        assert letter.service == "ingest"
        assert letter.source_topic == INBOUND_BY_CHANNEL[item.channel]
        assert letter.provider == item.provider
    readable = [o for o, outcome in enumerate(expected) if not isinstance(outcome, str)]
    assert all(batch[o].kind != "bad" for o in readable)


# --- the webhook ----------------------------------------------------------------------

SECRET = "whsec-property-1"
MAX_BODY = 8_192
# Telegram is left out of the secrets: a provider without a secret accepts no webhook.
SECRETS = {p: SecretStr(SECRET) for p in ("smtp", "x", "wechat", "twilio", "chatwoot", "generic")}
PATHS = [(c, p) for c, providers in PROVIDERS_BY_CHANNEL.items() for p in providers]
SEGMENT = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=12)


@dataclass
class FakeBroker:
    published: list[tuple[bytes, str, bytes | None, dict[str, str]]] = field(default_factory=list)

    async def publish(
        self,
        body: bytes,
        topic: str,
        *,
        key: bytes | None = None,
        headers: dict[str, str] | None = None,
        **_: Any,
    ) -> None:
        self.published.append((body, topic, key, headers or {}))


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes, str | None, bool]:
    channel, provider = draw(
        st.one_of(
            st.sampled_from(PATHS),
            st.sampled_from(PATHS),
            st.tuples(st.sampled_from(list(PROVIDERS_BY_CHANNEL)), SEGMENT),
            st.tuples(SEGMENT, st.sampled_from([p for _, p in PATHS])),
        )
    )
    n = draw(st.integers(10_000, 10**9))
    body = draw(
        st.one_of(
            good(n).map(lambda i: i.raw),
            bad(n).map(lambda i: i.raw),
            mutated(n).map(lambda i: i.raw),
            st.binary(max_size=200),
            st.just(b""),
            st.integers(MAX_BODY - 2, MAX_BODY + 64).map(lambda size: b"{" * size),
        )
    )
    # Mostly a valid signature: what happens after the signature check is the interesting part.
    kind = draw(
        st.sampled_from(["valid"] * 4 + ["missing", "empty", "secret", "body", "cut", "junk"])
    )
    if kind == "valid":
        supplied: str | None = sign(SECRET, body)
    elif kind == "missing":
        supplied = None
    elif kind == "empty":
        supplied = ""
    elif kind == "secret":
        supplied = sign("not-the-secret", body)
    elif kind == "body":
        supplied = sign(SECRET, body + draw(st.binary(max_size=20)) + b"!")
    elif kind == "cut":
        supplied = sign(SECRET, body)[:-1]
    else:
        supplied = draw(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80))
    return channel, provider, body, supplied, draw(st.booleans())


def expected_status(channel: str, provider: str, body: bytes, supplied: str | None) -> int:
    if channel not in PROVIDERS_BY_CHANNEL or provider not in PROVIDERS_BY_CHANNEL[channel]:
        return 404
    if len(body) > MAX_BODY:
        return 413
    if provider not in SECRETS or supplied is None or supplied.strip() != sign(SECRET, body):
        return 401
    if not body:
        return 400
    try:
        prepare(channel, provider, body, POLICY.parser)
    except ParseError:
        return 422
    return 202


async def post(
    channel: str, provider: str, body: bytes, supplied: str | None, chunked: bool
) -> tuple[httpx.Response, FakeBroker]:
    broker = FakeBroker()
    ingest_settings = IngestSettings(webhook_secrets=SECRETS, max_body_bytes=MAX_BODY)
    routes = make_routes(
        ingest_settings,
        broker,  # type: ignore[arg-type]
        FakeCustomerStore(),
        POLICY,
        metrics := IngestMetrics.create(CollectorRegistry()),
        access=Access.create(ingest_settings, MemoryAuditLog(), metrics.access),
    )
    transport = httpx.ASGITransport(app=Starlette(routes=routes))
    headers = {SIGNATURE_HEADER: supplied} if supplied is not None else {}

    async def stream() -> AsyncIterator[bytes]:
        # No Content-Length: the size limit must hold while reading, not only when declared.
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
        reply = await client.post(
            f"/v1/inbound/{channel}/{provider}",
            content=stream() if chunked else body,
            headers=headers,
        )
    return reply, broker


@settings(PROPERTY, max_examples=200)
@given(request=requests())
def test_any_webhook_gets_a_4xx_or_202_and_only_a_202_publishes(
    request: tuple[str, str, bytes, str | None, bool],
) -> None:
    channel, provider, body, supplied, chunked = request
    reply, broker = asyncio.run(post(channel, provider, body, supplied, chunked))

    assert reply.status_code == expected_status(channel, provider, body, supplied), reply.text
    if reply.status_code != 202:
        assert broker.published == []
        if reply.headers.get("content-type") == "application/json":
            assert reply.json()["error"]
        return
    accepted = [
        r for r in prepare(channel, provider, body, POLICY.parser) if not isinstance(r, Skipped)
    ]
    assert reply.json()["message_ids"] == [r.message_id for r in accepted]
    if not accepted:
        assert broker.published == []
        return
    # The raw bytes, as signed, go to the channel's inbound topic with the provider header.
    [(raw, topic, key, headers)] = broker.published
    assert raw == body
    assert topic == INBOUND_BY_CHANNEL[channel]  # type: ignore[index]
    assert headers == {"provider": provider}
    assert key == accepted[0].conversation_id.encode()


@pytest.mark.parametrize("code", [202, 400, 401, 404, 413, 422])
def test_the_request_strategy_reaches_every_outcome(code: int) -> None:
    # The webhook property proves little if the generator never produces some outcome.
    found = find(
        requests(),
        lambda r: expected_status(*r[:4]) == code,
        settings=settings(max_examples=2_000, database=None, phases=[Phase.generate]),
    )
    assert expected_status(*found[:4]) == code


@pytest.mark.parametrize(("maker", "readable"), [(good, True), (bad, False)])
def test_good_and_bad_items_are_so_by_construction(maker: Any, readable: bool) -> None:
    with pytest.raises(NoSuchExample):
        find(
            maker(10_001),
            lambda item: isinstance(oracle(item), list) != readable,
            settings=settings(max_examples=300, database=None, phases=[Phase.generate]),
        )
