"""Poison records on every consumed topic become dead letters; the records around them flow.

Who reads what (the `@subscriber`s of services/*/app.py):

    support.inbound.{email,social,phone,chat}   ingest
    support.messages                            router, notify
    support.customers                           notify
    support.agents                              router
    support.sla                                 router, notify
    support.tickets                             sla, notify
    support.incidents                           notify
    (support.notifications, support.deadletter: no service of the system)

What is poison:
- `support.inbound.*` carry the providers' raw payloads, not CloudEvents. Poison is a
  payload ingest cannot read as a message of the topic's channel: not the format, invalid
  UTF-8, the wrong shape or a value that fails validation (an operator object
  `{"$gt": ""}` where an id goes), an empty or null value, an unknown `provider` header,
  JSON nested 10,000 deep, an XML entity bomb. Not poison: operator-looking text
  (`$where: ...`) in a message is the customer's text, and it makes a ticket.
- Every other consumed topic carries CloudEvents (binary mode). Poison is a record
  without `ce_type` or `ce_id` (it can be neither dispatched nor deduplicated), a `ce_type`
  the consumer does not know (each topic's types are a closed set in the contract: an
  event nobody here understands is parked visibly, not dropped), data that fails the
  model of its type (not JSON, invalid UTF-8, wrong shape, null, an operator object where
  a string goes, nested JSON), and a valid event the consumer's decision cannot apply
  (an SLA clock at the end of time; numbers MongoDB cannot store). On the compacted
  support.customers a null value with a key is no poison: it deletes that customer.

Every consumer of a poison record writes one dead letter for it (one id, however often
the record is redelivered) naming the service, a reason and the record's
topic/partition/offset. Good records produced before and after the poison, on the same
partition (so usually in the same batch), have their normal effects, poison has none,
and every service process is still running.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from pydantic import BaseModel

from omniroute.cli import asyncapi_json
from omniroute.system import SERVICES, LocalSystem
from shared.contracts.agents import (
    AGENT_PRESENCE_CHANGED,
    AGENT_PROFILE_UPDATED,
    AgentPresenceChanged,
    AgentProfile,
    AgentProfileUpdated,
)
from shared.contracts.customers import CUSTOMER_UPDATED, CustomerUpdated
from shared.contracts.erasures import ERASURE_REQUESTED, ErasureRequested
from shared.contracts.incidents import INCIDENT_OPENED, Affected, Incident
from shared.contracts.messages import MESSAGE_RECEIVED, MessageReceived
from shared.contracts.sla import SlaEvent, sla_event_type
from shared.contracts.tickets import TicketEvent, ticket_event_type
from shared.embedded import EmbeddedStack
from shared.events import make_event
from shared.topics import (
    AGENTS,
    ALL_TOPICS,
    CUSTOMERS,
    DEADLETTER,
    ERASURES,
    INBOUND_BY_CHANNEL,
    INBOUND_CHAT,
    INBOUND_EMAIL,
    INBOUND_PHONE,
    INBOUND_SOCIAL,
    INCIDENTS,
    MESSAGES,
    NOTIFICATIONS,
    SLA,
    TICKETS,
)
from tests.support.kafka import read_all
from tests.support.payloads import SHAPES_BY_NAME
from tests.support.procs import alive
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

CONSUMERS: dict[str, tuple[str, ...]] = {
    INBOUND_EMAIL: ("ingest",),
    INBOUND_SOCIAL: ("ingest",),
    INBOUND_PHONE: ("ingest",),
    INBOUND_CHAT: ("ingest",),
    MESSAGES: ("router", "notify"),
    CUSTOMERS: ("notify",),
    AGENTS: ("router",),
    SLA: ("router", "notify"),
    TICKETS: ("sla", "notify", "ingest"),
    INCIDENTS: ("notify",),
    ERASURES: ("ingest", "router", "sla", "notify"),
}
# Consumers that read one type of a topic and leave its poison to the topic's main
# consumers: ingest keeps agents' `recategorized` corrections as training examples.
AUXILIARY: dict[str, tuple[str, ...]] = {TICKETS: ("ingest",)}


def dead_letterers(topic: str) -> tuple[str, ...]:
    return tuple(c for c in CONSUMERS[topic] if c not in AUXILIARY.get(topic, ()))


# The good inbound message of each channel, one provider shape each.
GOOD_SHAPE = {"chat": "chat", "email": "email", "social": "telegram", "phone": "call-log"}
END_OF_TIME = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
BEYOND_INT64 = 2**64
NESTED = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
DEADLINE_S = 90


@dataclass(frozen=True)
class Record:
    """One record to produce; `dead` names the services that must dead-letter it."""

    label: str
    topic: str
    value: bytes | None
    headers: dict[str, str]
    dead: tuple[str, ...] = ()
    reason: Callable[[str], bool] = lambda _: True
    odd_headers: tuple[tuple[str, bytes | None], ...] = ()  # not UTF-8, or null


@dataclass(frozen=True)
class Sent:
    record: Record
    partition: int
    offset: int


@dataclass
class Run:
    """Everything produced, and the ids whose effects (or absence) the tests look for."""

    tag: str
    sent: list[Sent] = field(default_factory=list)
    good_inbound: dict[str, list[str]] = field(default_factory=dict)  # channel -> message ids
    inbound_operator_text: str = ""  # message id of the "$where" text (not poison)
    good_messages: list[MessageReceived] = field(default_factory=list)
    poison_message_ids: list[str] = field(default_factory=list)
    good_customers: list[str] = field(default_factory=list)
    poison_customer_ids: list[str] = field(default_factory=list)
    agent_id: str = ""
    poison_agent_ids: list[str] = field(default_factory=list)
    good_tickets: list[str] = field(default_factory=list)
    poison_ticket_ids: list[str] = field(default_factory=list)
    good_timers: dict[str, str] = field(default_factory=dict)  # timer id -> router ticket id
    poison_timer_ids: list[str] = field(default_factory=list)
    good_incidents: list[str] = field(default_factory=list)
    operator_incident: str = ""  # title with "$where" keys and values (not poison)
    poison_incident_ids: list[str] = field(default_factory=list)


# -- reasons -----------------------------------------------------------------------------


def invalid(reason: str) -> bool:
    return reason.startswith("invalid ")


def unknown_type(reason: str) -> bool:
    return reason == "unknown event type"


def missing(attribute: str) -> Callable[[str], bool]:
    return lambda reason: reason == f"missing {attribute}"


def unprocessable(reason: str) -> bool:
    return reason.startswith("unprocessable ")


def exactly(expected: str) -> Callable[[str], bool]:
    return lambda reason: reason == expected


# -- records -----------------------------------------------------------------------------


def event_record(
    label: str, model: BaseModel, topic: str, ce_type: str, ce_id: str, dead: Sequence[str] = ()
) -> Record:
    event = make_event(
        model,
        topic=topic,
        event_type=ce_type,
        event_id=ce_id,
        source="omniroute/tests/poison",
        key=None,
        time=datetime.now(UTC),
    )
    return Record(label, topic, event.value, event.headers, tuple(dead))


def variant(
    label: str,
    topic: str,
    ce_type: str,
    good: BaseModel,
    reason: Callable[[str], bool],
    dead: Sequence[str] | None = None,
    **fields: Any,
) -> Record:
    """`good` with fields replaced (`a__b` is field b of field a), sent as its type; by
    default every consumer of the topic must dead-letter it."""
    data = good.model_dump(mode="json")
    for path, value in fields.items():
        *parents, last = path.split("__")
        target = data
        for name in parents:
            target = target[name]
        target[last] = value
    headers = {
        "ce_specversion": "1.0",
        "ce_id": f"poison-{uuid.uuid4().hex}",
        "ce_type": ce_type,
        "ce_source": "omniroute/tests/poison",
        "content-type": "application/json",
    }
    dead = dead_letterers(topic) if dead is None else tuple(dead)
    return Record(f"{topic} {label}", topic, json.dumps(data).encode(), headers, dead, reason)


def poison_events(
    topic: str, ce_type: str, good: BaseModel, id_field: str, new_id: Callable[[], str]
) -> list[Record]:
    """The CloudEvents poison every consumed topic gets; each names a fresh id."""
    consumers = dead_letterers(topic)

    def doc(**over: Any) -> dict[str, Any]:
        return {**good.model_dump(mode="json"), id_field: new_id(), **over}

    def headers(**over: str | None) -> dict[str, str]:
        base = {
            "ce_specversion": "1.0",
            "ce_id": f"poison-{uuid.uuid4().hex}",
            "ce_type": ce_type,
            "ce_source": "omniroute/tests/poison",
            "content-type": "application/json",
        }
        merged = {**base, **over}
        return {k: v for k, v in merged.items() if v is not None}

    def as_json(data: dict[str, Any]) -> bytes:
        return json.dumps(data).encode()

    bad_utf8 = as_json(doc(**{id_field: "XXXX"})).replace(b"XXXX", b"\xff\xfe\xc3(")
    rows: list[tuple[str, bytes | None, dict[str, str], Callable[[str], bool]]] = [
        ("not json", b"this is {not json", headers(), invalid),
        ("invalid utf-8", bad_utf8, headers(), invalid),
        ("wrong shape", b"[1, 2, 3]", headers(), invalid),
        ("operator object", as_json(doc(**{id_field: {"$gt": ""}})), headers(), invalid),
        (
            "$where object",
            as_json(doc(**{id_field: {"$where": "sleep(5000)"}})),
            headers(),
            invalid,
        ),
        ("null value", None, headers(), invalid),
        ("empty value", b"", headers(), invalid),
        ("nested 10,000 deep", NESTED, headers(), invalid),
        ("no ce_type", as_json(doc()), headers(ce_type=None), missing("ce_type")),
        ("no ce_id", as_json(doc()), headers(ce_id=None), missing("ce_id")),
        ("unknown ce_type", as_json(doc()), headers(ce_type="omniroute.poison.v1"), unknown_type),
    ]
    return [
        Record(f"{topic} {label}", topic, value, hdrs, consumers, reason)
        for label, value, hdrs, reason in rows
    ]


def poison_inbound(channel: str, tag: str) -> list[Record]:
    """Payloads ingest cannot read as a message of `channel`, with the reason it gives."""
    topic = INBOUND_BY_CHANNEL[channel]  # type: ignore[index]
    odd = b'{"hello": "world"}'
    unrecognised = "email: no sender" if channel == "email" else "unrecognised format"
    empty = "email: empty" if channel == "email" else "unrecognised format"
    # (label, value, provider header, reason)
    rows: list[tuple[str, bytes | None, bytes | None, str]] = [
        ("null value", None, None, empty),
        ("empty value", b"", None, empty),
        ("unknown provider header", odd, b"mongodb", f"unknown provider for {channel}"),
        ("provider header not utf-8", odd, b"gen\xff\xferic", f"unknown provider for {channel}"),
        ("provider header null", odd, None, unrecognised),
    ]
    if channel == "email":
        rows += [
            ("not a mail", b"\x00\xff\xfe\x00 no headers", b"smtp", "email: no sender"),
            ("no sender", b"Subject: hi\r\n\r\nbody\r\n", b"smtp", "email: no sender"),
        ]
    else:
        name = {"chat": "generic", "social": "telegram", "phone": "generic"}[channel]
        provider = name.encode()
        rows += [
            ("not json", b"this is {not json", provider, f"{name}: invalid json"),
            ("invalid utf-8", b'{"session_id": "\xff\xfe"}', provider, f"{name}: not utf-8"),
            ("wrong shape", b"[1, 2, 3]", provider, f"{name}: not an object"),
            ("nested 10,000 deep", NESTED, provider, f"{name}: invalid json"),
            ("no provider header, unrecognised", odd, None, "unrecognised format"),
        ]
    if channel == "chat":
        operator = {"session_id": {"$gt": ""}, "message_id": "m1", "text": "hi"}
        where = {"session_id": f"{tag}-w", "message_id": {"$where": "1"}, "text": "hi"}
        rows += [
            (
                "operator object",
                json.dumps(operator).encode(),
                b"generic",
                "generic: invalid payload",
            ),
            ("$where object", json.dumps(where).encode(), b"generic", "generic: invalid payload"),
        ]
    if channel == "social":
        bomb = (
            b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa">'
            b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
            b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
            b"<xml><ToUserName>gh_1</ToUserName><FromUserName>o1</FromUserName>"
            b"<CreateTime>1</CreateTime><MsgType>text</MsgType><Content>&c;</Content>"
            b"<MsgId>1</MsgId></xml>"
        )
        rows.append(("xml entity bomb", bomb, b"wechat", "wechat: forbidden xml construct"))
    if channel == "phone":
        form = b"CallSid=CA1&CallSid=CA2&CallStatus=busy"
        rows.append(("duplicated form field", form, b"twilio", "twilio: duplicate field"))
    return [
        Record(
            f"{topic} {label}",
            topic,
            value,
            {},
            ("ingest",),
            exactly(reason),
            # No header when the row has none; a null one for the row about that.
            (("provider", provider),) if provider or label == "provider header null" else (),
        )
        for label, value, provider, reason in rows
    ]


def message(run: Run, n: str) -> MessageReceived:
    now = datetime.now(UTC)
    return MessageReceived(
        message_id=f"msg_{run.tag}_{n}",
        conversation_id=f"cnv_{run.tag}_{n}",
        channel="chat",
        provider="generic",
        provider_message_id=f"{run.tag}:{n}",
        sent_at=now,
        received_at=now,
        customer_id=f"cus_{run.tag}_{n}",
        text="My withdrawal is stuck",
        language="en",
        category="withdrawal",
    )


def ticket(run: Run, n: str, **over: Any) -> TicketEvent:
    now = datetime.now(UTC)
    data: dict[str, Any] = {
        "ticket_id": f"tkt_{run.tag}_{n}",
        "event": "opened",
        "priority": "P3",
        "category": "general",
        "channel": "chat",
        "customer_id": f"cus_{run.tag}_t{n}",
        "language": "en",
        "at": now,
        "state": "queued",
        "opened_at": now,
        "sequence": 1,
    }
    return TicketEvent.model_validate({**data, **over})


def incident(run: Run, n: str, **over: Any) -> Incident:
    now = datetime.now(UTC)
    data: dict[str, Any] = {
        "incident_id": f"inc_{run.tag}_{n}",
        "status": "investigating",
        "severity": "minor",
        "title": {"en": "Poison test incident"},
        "affected": Affected(categories=("kyc",), assets=("ZZZ",)),
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }
    return Incident.model_validate({**data, **over})


def breach(timer_id: str, ticket_id: str, customer_id: str) -> SlaEvent:
    now = datetime.now(UTC)
    return SlaEvent(
        timer_id=timer_id,
        ticket_id=ticket_id,
        event="breached",
        metric="first_response",
        due_at=now,
        elapsed_s=61.0,
        target_s=60.0,
        priority="P3",
        channel="chat",
        customer_id=customer_id,
        at=now,
    )


def ids(prefix: str, into: list[str]) -> Callable[[], str]:
    def new() -> str:
        value = f"{prefix}{len(into)}"
        into.append(value)
        return value

    return new


def first_batch(run: Run) -> list[Record]:
    """Every topic but support.sla: good, poison, good — on one partition per topic."""
    records: list[Record] = []
    base = int(uuid.uuid4().int % 10**9) * 10
    for i, (channel, shape_name) in enumerate(sorted(GOOD_SHAPE.items())):
        shape = SHAPES_BY_NAME[shape_name]
        topic = INBOUND_BY_CHANNEL[shape.channel]
        before, after = base + 2 * i, base + 2 * i + 1
        run.good_inbound[channel] = [shape.message_id(before), shape.message_id(after)]
        hdr = {"provider": shape.provider}
        records.append(Record(f"{topic} good before", topic, shape.build(before, "help"), hdr))
        records += poison_inbound(channel, run.tag)
        records.append(Record(f"{topic} good after", topic, shape.build(after, "help"), hdr))
    # Operator-looking text is the customer's text: a ticket, not a dead letter.
    chat = SHAPES_BY_NAME["chat"]
    operator_text = '{"$where": "sleep(5000)"} $gt $ne db.tickets.drop()'
    run.inbound_operator_text = chat.message_id(base + 99)
    records.append(
        Record(
            f"{INBOUND_CHAT} operator text",
            INBOUND_CHAT,
            chat.build(base + 99, operator_text),
            {"provider": "generic"},
        )
    )

    # support.messages: router opens tickets, notify remembers the conversation.
    run.good_messages = [message(run, "before"), message(run, "after"), message(run, "odd")]
    before, after, _ = run.good_messages
    records.append(
        event_record("messages good before", before, MESSAGES, MESSAGE_RECEIVED, f"{run.tag}-m0")
    )
    records += poison_events(
        MESSAGES,
        MESSAGE_RECEIVED,
        before,
        "message_id",
        ids(f"msg_{run.tag}_p", run.poison_message_ids),
    )
    # Extension headers a consumer does not read may be anything: the event still counts.
    odd = event_record(
        "messages odd headers", run.good_messages[2], MESSAGES, MESSAGE_RECEIVED, f"{run.tag}-m2"
    )
    records.append(
        replace(odd, odd_headers=(("ce_traceparent", b"\xff\xfe\x00"), ("x-null", None)))
    )
    records.append(
        event_record("messages good after", after, MESSAGES, MESSAGE_RECEIVED, f"{run.tag}-m1")
    )

    # support.customers: notify keeps its copy; a null value with a key deletes one.
    now = datetime.now(UTC)
    customers = [
        CustomerUpdated(customer_id=f"cus_{run.tag}_c{n}", version=1, at=now) for n in range(2)
    ]
    run.good_customers = [c.customer_id for c in customers]
    records.append(
        event_record(
            "customers good before", customers[0], CUSTOMERS, CUSTOMER_UPDATED, f"{run.tag}-c0"
        )
    )
    new_customer = ids(f"cus_{run.tag}_p", run.poison_customer_ids)
    for r in poison_events(CUSTOMERS, CUSTOMER_UPDATED, customers[0], "customer_id", new_customer):
        # The record's key is "poison-support.customers": its null value deletes that one.
        records.append(replace(r, dead=()) if r.value is None else r)
    records.append(
        variant(
            "version beyond int64",
            CUSTOMERS,
            CUSTOMER_UPDATED,
            customers[0],
            invalid,
            customer_id=new_customer(),
            version=BEYOND_INT64,
        )
    )
    records.append(
        event_record(
            "customers good after", customers[1], CUSTOMERS, CUSTOMER_UPDATED, f"{run.tag}-c1"
        )
    )

    # support.erasures: every service erases its own records (here of a customer nobody
    # has: nothing to erase) and says so; poison is dead-lettered by each of them.
    request = ErasureRequested(
        erasure_id=f"era_{run.tag}_0",
        customer_id=f"cus_{run.tag}_nobody",
        reason="poison test",
        requested_by="tests",
        at=datetime.now(UTC),
    )
    records.append(
        event_record("erasures good", request, ERASURES, ERASURE_REQUESTED, f"{run.tag}-e0")
    )
    records += poison_events(
        ERASURES, ERASURE_REQUESTED, request, "erasure_id", ids(f"era_{run.tag}_p", [])
    )

    # support.agents: the router keeps the agent's profile and presence.
    run.agent_id = f"{run.tag}-agent"
    profile = AgentProfile(name="Poison Test", capacity={"chat": 0})
    good_profile = AgentProfileUpdated(agent_id=run.agent_id, profile=profile, at=datetime.now(UTC))
    records.append(
        event_record(
            "agents good before", good_profile, AGENTS, AGENT_PROFILE_UPDATED, f"{run.tag}-a0"
        )
    )
    new_agent = ids(f"{run.tag}-poison-agent-", run.poison_agent_ids)
    records += poison_events(AGENTS, AGENT_PROFILE_UPDATED, good_profile, "agent_id", new_agent)
    records.append(
        variant(
            "capacity beyond int64",
            AGENTS,
            AGENT_PROFILE_UPDATED,
            good_profile,
            invalid,
            agent_id=new_agent(),
            profile__capacity={"chat": BEYOND_INT64},
        )
    )
    away = AgentPresenceChanged(agent_id=run.agent_id, status="away", at=datetime.now(UTC))
    records.append(
        event_record("agents good after", away, AGENTS, AGENT_PRESENCE_CHANGED, f"{run.tag}-a1")
    )

    # support.tickets: sla arms timers, notify acknowledges the customer.
    run.good_tickets = [f"tkt_{run.tag}_before", f"tkt_{run.tag}_after"]
    good = ticket(run, "before")
    opened = ticket_event_type("opened")
    records.append(event_record("tickets good before", good, TICKETS, opened, f"{run.tag}-t0"))
    new_ticket = ids(f"tkt_{run.tag}_p", run.poison_ticket_ids)
    records += poison_events(TICKETS, opened, good, "ticket_id", new_ticket)
    # Valid for notify (it acknowledges the ticket); the end of time overflows sla's clock.
    end = ticket(run, "end", ticket_id=new_ticket(), at=END_OF_TIME, opened_at=END_OF_TIME)
    records.append(
        variant("at the end of time", TICKETS, opened, end, unprocessable, dead=("sla",))
    )
    records.append(
        variant(
            "sequence beyond int64",
            TICKETS,
            opened,
            good,
            invalid,
            ticket_id=new_ticket(),
            sequence=BEYOND_INT64,
        )
    )
    good = ticket(run, "after")
    records.append(event_record("tickets good after", good, TICKETS, opened, f"{run.tag}-t1"))

    # support.incidents: notify stores the incident.
    run.good_incidents = [f"inc_{run.tag}_before", f"inc_{run.tag}_after"]
    good_incident = incident(run, "before")
    records.append(
        event_record(
            "incidents good before", good_incident, INCIDENTS, INCIDENT_OPENED, f"{run.tag}-i0"
        )
    )
    new_incident = ids(f"inc_{run.tag}_p", run.poison_incident_ids)
    records += poison_events(INCIDENTS, INCIDENT_OPENED, good_incident, "incident_id", new_incident)
    records.append(
        variant(
            "version beyond int64",
            INCIDENTS,
            INCIDENT_OPENED,
            good_incident,
            invalid,
            incident_id=new_incident(),
            version=BEYOND_INT64,
        )
    )
    # Operator-looking keys and values are data: stored as written, nothing evaluated.
    odd = incident(run, "odd", title={"en": "$where: sleep(5000)", "$where": "1", "a.b": "2"})
    run.operator_incident = odd.incident_id
    records.append(
        event_record("incidents operator-looking", odd, INCIDENTS, INCIDENT_OPENED, f"{run.tag}-i2")
    )
    records.append(
        event_record(
            "incidents good after",
            incident(run, "after"),
            INCIDENTS,
            INCIDENT_OPENED,
            f"{run.tag}-i1",
        )
    )
    return records


def second_batch(run: Run, tickets: dict[str, dict[str, Any]]) -> list[Record]:
    """support.sla, once the router has the tickets of the good messages: each breach
    escalates its ticket (router) and apologises to the customer (notify)."""
    records: list[Record] = []
    breaches = []
    for n, m in enumerate(run.good_messages[:2]):
        t = tickets[m.message_id]
        timer_id = f"tmr_{run.tag}_{n}"
        run.good_timers[timer_id] = t["_id"]
        breaches.append(breach(timer_id, t["_id"], t["customer_id"]))
    ce_type = sla_event_type("breached")
    records.append(event_record("sla good before", breaches[0], SLA, ce_type, f"{run.tag}-s0"))
    new_timer = ids(f"tmr_{run.tag}_p", run.poison_timer_ids)
    records += poison_events(SLA, ce_type, breaches[0], "timer_id", new_timer)
    # JSON has no Infinity; Python's parsers read it, and no arithmetic survives it.
    records.append(
        variant(
            "infinite target",
            SLA,
            ce_type,
            breaches[0],
            invalid,
            timer_id=new_timer(),
            target_s=float("inf"),
        )
    )
    records.append(event_record("sla good after", breaches[1], SLA, ce_type, f"{run.tag}-s1"))
    return records


async def produce(bootstrap: str, records: list[Record]) -> list[Sent]:
    """In order, each topic's records on one partition (the same key): one batch's worth."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        futures = [
            await producer.send(
                r.topic,
                r.value,
                key=f"poison-{r.topic}".encode(),
                headers=[(k, v.encode()) for k, v in r.headers.items()] + list(r.odd_headers),
            )
            for r in records
        ]
        metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [Sent(r, m.partition, m.offset) for r, m in zip(records, metas, strict=True)]


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    """A broker and store of this module's own: the records that are not CloudEvents it
    writes to CloudEvents topics must not meet other modules' checks of those topics."""
    with EmbeddedStack(data_dir=tmp_path_factory.mktemp("poison-stack")) as running:
        yield running


@pytest.fixture(scope="module")
def run(system: LocalSystem, db: Any) -> Run:
    """Produce everything; return once the router has the tickets support.sla refers to."""
    state = Run(tag=uuid.uuid4().hex[:8])
    bootstrap = system.stack.kafka_bootstrap
    state.sent += asyncio.run(produce(bootstrap, first_batch(state)))
    wanted = [m.message_id for m in state.good_messages]

    def tickets() -> dict[str, dict[str, Any]]:
        found = {
            mid: t
            for t in db.tickets.find({"message_ids": {"$in": wanted}})
            for mid in t["message_ids"]
        }
        return found if set(wanted) <= set(found) else {}

    by_message = wait_until(tickets, DEADLINE_S, "tickets for the good support.messages events")
    state.sent += asyncio.run(produce(bootstrap, second_batch(state, by_message)))
    return state


Source = tuple[str, int, int]  # topic, partition, offset


def letters_of(system: LocalSystem) -> dict[Source, list[dict[str, Any]]]:
    """Every dead letter with a source, by source; each with its event id as `ce_id`."""
    found: dict[Source, list[dict[str, Any]]] = defaultdict(list)
    for r in asyncio.run(read_all(system.stack.kafka_bootstrap, [DEADLETTER])):
        letter = json.loads(r.value)
        if letter.get("source_topic") is not None:
            letter["ce_id"] = dict(r.headers)["ce_id"].decode()
            source = (letter["source_topic"], letter["source_partition"], letter["source_offset"])
            found[source].append(letter)
    return found


def services_of(found: dict[Source, list[dict[str, Any]]], sent: Sent) -> set[str]:
    source = (sent.record.topic, sent.partition, sent.offset)
    return {letter["service"] for letter in found.get(source, [])}


# -- tests -------------------------------------------------------------------------------


def test_the_table_of_consumers_is_the_system_s() -> None:
    # As each service's AsyncAPI document (its `receive` operations) says.
    consumed: dict[str, set[str]] = defaultdict(set)
    for service in SERVICES:
        doc = json.loads(asyncapi_json(service))
        for op in doc["operations"].values():
            if op["action"] == "receive":
                channel = doc["channels"][op["channel"]["$ref"].rsplit("/", 1)[-1]]
                consumed[channel["address"]].add(service)
    assert consumed == {topic: set(services) for topic, services in CONSUMERS.items()}
    assert set(ALL_TOPICS) - set(consumed) == {NOTIFICATIONS, DEADLETTER}


def test_each_poison_record_is_dead_lettered_once_by_each_consumer(
    system: LocalSystem, run: Run
) -> None:
    poison = [s for s in run.sent if s.record.dead]
    covered = {s.record.topic for s in poison}
    assert covered == set(CONSUMERS)

    def absent(found: dict[Source, list[dict[str, Any]]]) -> list[str]:
        return [
            f"{s.record.label}: {sorted(set(s.record.dead) - services_of(found, s))}"
            for s in poison
            if not set(s.record.dead) <= services_of(found, s)
        ]

    def complete() -> dict[Source, list[dict[str, Any]]] | None:
        found = letters_of(system)
        return None if absent(found) else found

    try:
        found = wait_until(complete, DEADLINE_S, "a dead letter from every consumer")
    except AssertionError:
        raise AssertionError("no dead letter:\n" + "\n".join(absent(letters_of(system)))) from None
    problems = []
    for s in run.sent:
        letters = found.get((s.record.topic, s.partition, s.offset), [])
        by_service: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for letter in letters:
            by_service[letter["service"]].append(letter)
        if set(by_service) != set(s.record.dead):
            got, expected = sorted(by_service), sorted(s.record.dead)
            problems.append(f"{s.record.label}: dead-lettered by {got}, expected {expected}")
        for service, same in by_service.items():
            # One dead letter per (record, service): a redelivery repeats its event id.
            if len({letter["ce_id"] for letter in same}) != 1:
                problems.append(f"{s.record.label}: {service} wrote {len(same)} dead letters")
            reasons = {letter["reason"] for letter in same}
            if len(reasons) != 1 or not s.record.reason(reasons.pop()):
                problems.append(f"{s.record.label}: {service} gave {[x['reason'] for x in same]}")
    assert not problems, "\n".join(problems)


def test_records_around_the_poison_have_their_effects(db: Any, run: Run) -> None:
    # Inbound: the good messages of every channel (and the operator-looking text) are ticketed.
    wanted = [mid for ids_ in run.good_inbound.values() for mid in ids_]
    wanted.append(run.inbound_operator_text)

    def ticketed() -> bool:
        found = db.tickets.find({"message_ids": {"$in": wanted}}, {"message_ids": 1})
        return {m for t in found for m in t["message_ids"]} >= set(wanted)

    wait_until(ticketed, DEADLINE_S, "a ticket for every good inbound message")

    # support.messages: notify remembers every conversation (the router ticketed each
    # before support.sla was produced).
    conversations = [m.conversation_id for m in run.good_messages]
    wait_until(
        lambda: (
            db.notify_conversations.count_documents({"_id": {"$in": conversations}})
            == len(conversations)
        ),
        DEADLINE_S,
        "notify's route for every good message",
    )

    # support.customers: notify's copy of both good customers.
    wait_until(
        lambda: (
            db.notify_customers.count_documents({"_id": {"$in": run.good_customers}})
            == len(run.good_customers)
        ),
        DEADLINE_S,
        "notify's copy of both good customers",
    )

    # support.agents: the profile before the poison, the presence after it.
    def agent() -> dict[str, Any] | None:
        doc: dict[str, Any] | None = db.agents.find_one({"_id": run.agent_id})
        return doc if doc and doc.get("presence") == "away" else None

    doc = wait_until(agent, DEADLINE_S, "the good agent's profile and presence")
    assert doc["profile"]["name"] == "Poison Test"

    # support.tickets: sla armed timers and notify acknowledged, for both good tickets.
    wait_until(
        lambda: (
            set(db.sla_timers.distinct("ticket_id", {"ticket_id": {"$in": run.good_tickets}}))
            == set(run.good_tickets)
        ),
        DEADLINE_S,
        "sla timers for both good tickets",
    )
    wait_until(
        lambda: (
            set(db.notifications.distinct("ticket_id", {"ticket_id": {"$in": run.good_tickets}}))
            == set(run.good_tickets)
        ),
        DEADLINE_S,
        "notify's acknowledgement for both good tickets",
    )

    # support.incidents: both good incidents stored.
    wait_until(
        lambda: db.incidents.count_documents({"_id": {"$in": run.good_incidents}}) == 2,
        DEADLINE_S,
        "both good incidents",
    )
    odd = wait_until(
        lambda: db.incidents.find_one({"_id": run.operator_incident}),
        DEADLINE_S,
        "the incident with operator-looking keys",
    )
    assert odd["title"] == {"en": "$where: sleep(5000)", "$where": "1", "a.b": "2"}

    # support.sla: both breaches escalated their tickets and were apologised for.
    def escalated() -> bool:
        for timer_id, ticket_id in run.good_timers.items():
            t = db.tickets.find_one({"_id": ticket_id}, {"breaches": 1, "escalated": 1})
            if not t or timer_id not in t.get("breaches", []) or not t.get("escalated"):
                return False
        return True

    wait_until(escalated, DEADLINE_S, "the router escalating both breached tickets")
    causes = [f"sla_breached:{timer_id}" for timer_id in run.good_timers]
    wait_until(
        lambda: db.notifications.count_documents({"cause": {"$in": causes}}) == len(causes),
        DEADLINE_S,
        "notify's apology for both breaches",
    )


def test_poison_has_no_effect(db: Any, run: Run) -> None:
    # Runs after the effects test: every good record behind the poison has been applied.
    assert db.tickets.count_documents({"message_ids": {"$in": run.poison_message_ids}}) == 0
    assert db.agents.count_documents({"_id": {"$in": run.poison_agent_ids}}) == 0
    assert db.notify_customers.count_documents({"_id": {"$in": run.poison_customer_ids}}) == 0
    assert db.sla_timers.count_documents({"ticket_id": {"$in": run.poison_ticket_ids}}) == 0
    assert db.incidents.count_documents({"_id": {"$in": run.poison_incident_ids}}) == 0
    assert db.tickets.count_documents({"breaches": {"$in": run.poison_timer_ids}}) == 0
    causes = [f"sla_breached:{timer_id}" for timer_id in run.poison_timer_ids]
    assert db.notifications.count_documents({"cause": {"$in": causes}}) == 0


def test_every_service_is_still_running(system: LocalSystem) -> None:
    for svc in system.services.values():
        assert svc.proc is not None and svc.proc.poll() is None, svc.name
        assert alive(svc.proc.pid), svc.name
