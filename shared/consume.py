"""The consumer kit: a batch of Kafka records in, typed contract events and dead letters out.

Every service reads its topics the same way, written once here:

    decoder = Decoder("router", Contracts({MESSAGE_RECEIVED: MessageReceived, ...}))
    batch = decoder.decode(records, now)
    for item in batch.events:          # Incoming(event, ce_type, ce_id, record), in order
        ...                            # dispatch on type(item.event): the decisions
    publish_all(broker, [*out, *batch.dead])

Poison, each dead-lettered with its reason, never stopping the batch around it: a record
without `ce_type` or `ce_id` ("missing ce_type"), a type the consumer does not read on a
topic whose every type is in the contract ("unknown event type": parked where people look,
not dropped), and data that fails its type's model ("invalid <kind> event", with the
number of errors). On a compacted topic named in `tombstones`, a record with a key and
no value is a deletion of that key: it comes out as a `Tombstone`, in `Decoded.tombstones`
(its partition and offset order it against the events of the same key). A decision that
raises on a decoded event is the caller's to dead-letter, with
`Decoder.dead(..., reason=f"unprocessable {kind} event")`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from shared.deadletter import Scrub, dead_letter
from shared.events import NotACloudEvent, OutboundEvent, envelope_of


def kind_of(ce_type: str) -> str:
    """The kind of a type for reasons: `omniroute.message.received.v1` -> `message`."""
    parts = ce_type.split(".")
    return parts[1] if len(parts) > 2 else "input"


@dataclass(frozen=True)
class Contracts:
    """The CloudEvents types a consumer reads and the model of each.

    A key ending in "." is a prefix (`omniroute.ticket.` reads every ticket event).
    """

    models: Mapping[str, type[BaseModel]]

    def model_of(self, ce_type: str) -> type[BaseModel] | None:
        exact = self.models.get(ce_type)
        if exact is not None:
            return exact
        for key, model in self.models.items():
            if key.endswith(".") and ce_type.startswith(key):
                return model
        return None


@dataclass(frozen=True)
class Incoming:
    """One decoded record: the contract model, its CloudEvents type and id, the record."""

    event: BaseModel
    ce_type: str
    ce_id: str
    record: Any = None


@dataclass(frozen=True)
class Tombstone:
    """A compacted topic's deletion: the key whose earlier records no longer hold."""

    topic: str
    key: str
    record: Any = None


@dataclass
class Decoded:
    events: list[Incoming] = field(default_factory=list)
    dead: list[OutboundEvent] = field(default_factory=list)
    tombstones: list[Tombstone] = field(default_factory=list)


@dataclass
class Decoder:
    service: str
    contracts: Contracts
    scrub: Scrub | None = None
    on_dead: Callable[[str], None] | None = None  # e.g. a metric by reason
    tombstones: frozenset[str] = frozenset()  # compacted topics whose null values delete

    def dead(
        self, reason: str, record: Any, now: datetime, detail: str | None = None
    ) -> OutboundEvent:
        if self.on_dead is not None:
            self.on_dead(reason)
        return dead_letter(
            service=self.service,
            reason=reason,
            detail=detail,
            payload=getattr(record, "value", None) or b"",
            now=now,
            scrub=self.scrub,
            record=record,
        )

    def decode(self, records: Iterable[Any], now: datetime) -> Decoded:
        out = Decoded()
        for record in records:
            topic = getattr(record, "topic", None)
            if record.value is None and topic in self.tombstones:
                key = record.key.decode("utf-8", "replace") if record.key else ""
                if key:
                    out.tombstones.append(Tombstone(topic, key, record))
                else:
                    out.dead.append(self.dead("tombstone without key", record, now))
                continue
            try:
                env = envelope_of(record)
            except NotACloudEvent as exc:
                out.dead.append(self.dead(exc.reason, record, now))
                continue
            model = self.contracts.model_of(env.type)
            if model is None:
                out.dead.append(self.dead("unknown event type", record, now))
                continue
            try:
                event = model.model_validate_json(record.value or b"")
            except ValidationError as exc:
                detail = f"{exc.error_count()} errors"
                out.dead.append(
                    self.dead(f"invalid {kind_of(env.type)} event", record, now, detail)
                )
                continue
            out.events.append(Incoming(event, env.type, env.id, record))
        return out
