"""The contract in the AsyncAPI documents: typed batches in, registered publishers out.

FastStream writes a service's AsyncAPI document from its subscribers' parameter types and
its registered publishers. The services read their records themselves (one poison record
must never stop a consumer), so a subscriber takes the batch's records as they are and
names, in its type, the contract they carry:

    @broker.subscriber(TICKETS, batch=True, decoder=records, description=...)
    async def on_ticket_events(batch: Records[TicketEvent]) -> None:
        await engine.process(batch)          # aiokafka ConsumerRecords, undecoded

and every topic it sends is declared once at start, with its payload model:

    declare_sends(broker, TICKETS, DEADLETTER)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar, get_args

from faststream.kafka import KafkaBroker
from faststream.message import StreamMessage
from faststream.specification import AsyncAPI
from faststream.specification.base import SpecificationFactory
from pydantic import Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from shared.contracts.agents import (
    AGENT_ACTION_TAKEN,
    AGENT_PRESENCE_CHANGED,
    AGENT_PROFILE_UPDATED,
    AgentEvent,
)
from shared.contracts.customers import CUSTOMER_UPDATED, CustomerUpdated
from shared.contracts.deadletter import DEAD_LETTERED, DeadLettered
from shared.contracts.erasures import ERASURE_TYPES, ErasureEvent
from shared.contracts.incidents import INCIDENT_EVENT_TYPES, Incident
from shared.contracts.messages import MESSAGE_RECEIVED, MessageReceived
from shared.contracts.notifications import NotificationRecorded
from shared.contracts.sla import SlaEvent
from shared.contracts.tickets import TicketEvent
from shared.events import records_of
from shared.topics import (
    AGENTS,
    CUSTOMERS,
    DEADLETTER,
    ERASURES,
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

ENVELOPE = (
    "Every event is a CloudEvents 1.0 event in Kafka binary content mode: its attributes"
    " in `ce_*` headers (`ce_type` names the event and its version, `ce_id` is"
    " deterministic, so a redelivery has the id it had), its data the JSON payload"
    " documented here. Unknown fields are ignored, so fields are added compatibly; a"
    " breaking change is a new `.vN` type. Inbound topics carry providers' own payloads"
    " instead."
)

T = TypeVar("T")


class Records(tuple[Any, ...], Generic[T]):
    """A batch's Kafka records as they came (aiokafka ConsumerRecords), for a handler that
    decodes them itself; `T` is what each record's value carries, for the document only.

    Nothing validates the records against `T`, whatever the broker's `apply_types`.
    """

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        (carried,) = get_args(source) or (Any,)
        return core_schema.no_info_plain_validator_function(
            _as_is, json_schema_input_schema=handler.generate_schema(carried)
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        # FastStream takes a lone `$ref` payload for the first of its definitions: keep the
        # reference inside `allOf` so it names the right model.
        return {"allOf": [json_schema]} if "$ref" in json_schema else json_schema


def _as_is(value: Any) -> Any:
    return value


async def records(msg: StreamMessage[Any]) -> Records[Any]:
    """Decoder for batch subscribers: the batch's records, undecoded."""
    return Records(records_of(msg.raw_message))


RawInbound = Annotated[
    bytes,
    Field(
        title="RawInbound",
        description="A provider's own payload, as the provider sent it, keyed by"
        " conversation; the `provider` header (smtp, x, telegram, wechat, twilio, chatwoot,"
        " generic) says which format, and ingest recognises it where the header is"
        " missing. support.inbound.email: the raw RFC 5322 message (any MIME structure"
        " and charset). support.inbound.social: X Account Activity webhook JSON, Telegram"
        " Bot API Update JSON, WeChat Official Account message XML."
        " support.inbound.phone: Twilio voice webhook fields (form-encoded) or a generic"
        " JSON call log. support.inbound.chat: Chatwoot `message_created` webhook JSON or"
        " a generic JSON chat message.",
    ),
]


@dataclass(frozen=True)
class Sent:
    """What a topic carries, as every service that sends to it documents it."""

    payload: Any
    description: str


def _types(*names: str) -> str:
    return ", ".join(f"`{n}`" for n in names)


SENT: dict[str, Sent] = {
    **{
        topic: Sent(
            RawInbound,
            "Webhook bodies accepted (signature checked) at POST"
            " /v1/inbound/{channel}/{provider}, forwarded unchanged with their `provider`"
            " header, so they take the adapters' path through ingest",
        )
        for topic in (INBOUND_EMAIL, INBOUND_SOCIAL, INBOUND_PHONE, INBOUND_CHAT)
    },
    MESSAGES: Sent(
        MessageReceived,
        "One event per customer message, whatever the channel: parsed, secrets redacted,"
        " customer identified, classified; keyed by conversation."
        f" Type {_types(MESSAGE_RECEIVED)}",
    ),
    CUSTOMERS: Sent(
        CustomerUpdated,
        "A customer's current facts (tier, anti-phishing code, preferred language, legal"
        " hold) whenever ingest creates or changes the customer; compacted, keyed by"
        f" customer id, `version` grows with every change. Type {_types(CUSTOMER_UPDATED)}",
    ),
    TICKETS: Sent(
        TicketEvent,
        "Every change of a ticket with its priority and the reasons for it, keyed by ticket"
        " id. Type `omniroute.ticket.<event>.v1`",
    ),
    AGENTS: Sent(
        AgentEvent,
        "Agent profiles, presence and actions from the HTTP API, for desks without a Kafka"
        " producer; keyed by agent id. Types "
        + _types(AGENT_PROFILE_UPDATED, AGENT_PRESENCE_CHANGED, AGENT_ACTION_TAKEN),
    ),
    SLA: Sent(
        SlaEvent,
        "SLA timers started, warned, breached, met, paused and resumed, each carrying its"
        " target and due time; keyed by ticket id. Type `omniroute.sla.<event>.v1`",
    ),
    INCIDENTS: Sent(
        Incident,
        "Platform incidents declared by ops, the whole incident after each change; keyed"
        f" by incident id. Types {_types(*INCIDENT_EVENT_TYPES)}",
    ),
    NOTIFICATIONS: Sent(
        NotificationRecorded,
        "What a customer was (or will be) told, one per cause: recorded, sent, failed,"
        " dead; keyed by ticket id. Type `omniroute.notification.<status>.v1`",
    ),
    DEADLETTER: Sent(
        DeadLettered,
        "Anything that could not be processed, with the reason, the service and where it"
        f" was read from; the payload redacted and truncated. Type {_types(DEAD_LETTERED)}",
    ),
    ERASURES: Sent(
        ErasureEvent,
        "Erasure requests (ingest, keyed by customer id), each service's completion with"
        " what it erased per collection (keyed by erasure id) and legal holds (ingest,"
        f" keyed by customer id); no identity or text. Types {_types(*ERASURE_TYPES)}",
    ),
}


def declare_sends(broker: KafkaBroker, *topics: str) -> None:
    """Register a publisher per topic, so the service's document shows what it sends.

    The services publish through `shared.events.publish_all` (batched, acknowledged
    before their offsets are committed); these publishers document that traffic.
    """
    for topic in topics:
        sent = SENT[topic]
        broker.publisher(topic, schema=sent.payload, description=sent.description)


def document(title: str, *brokers: KafkaBroker) -> AsyncAPI:
    """A service's AsyncAPI document: what `brokers` (and the app's own broker) receive and
    send, with the envelope every event shares as its description."""
    return AsyncAPI(*brokers, title=title, description=ENVELOPE)


# Maps whose order is FastStream's registration order (kept in sets): sorted, so the same
# code always writes the same document.
_SORTED = (("channels",), ("operations",), ("components", "messages"), ("components", "schemas"))


def document_json(spec: SpecificationFactory) -> str:
    """The document as indented JSON, the same text for the same code."""
    doc = json.loads(spec.to_specification().to_json())
    for path in _SORTED:
        *parents, name = path
        node = doc
        for parent in parents:
            node = node.get(parent, {})
        if name in node:
            node[name] = dict(sorted(node[name].items()))
    return json.dumps(doc, indent=2, ensure_ascii=False)
