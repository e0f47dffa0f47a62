"""A batch of notify's inputs, sorted by kind (the consumer kit decodes; this sorts).

Messages bring routes, facts and customer facts; `support.customers` brings customer
records (per customer the last record of the batch decides: an update, or — a null value,
a tombstone — a deletion); ticket, SLA and incident events keep their CloudEvents id (the
cause a notification is derived from). Records that are not one of these are dead letters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.notify.store.customers import Customer
from shared.consume import Contracts, Decoder
from shared.contracts.customers import CUSTOMER_UPDATED, CustomerUpdated
from shared.contracts.incidents import INCIDENT_EVENT_TYPES, Incident
from shared.contracts.messages import MESSAGE_RECEIVED, MessageReceived
from shared.contracts.sla import SlaEvent
from shared.contracts.tickets import TicketEvent
from shared.events import OutboundEvent
from shared.topics import CUSTOMERS

INPUTS = Contracts(
    {
        MESSAGE_RECEIVED: MessageReceived,
        CUSTOMER_UPDATED: CustomerUpdated,
        "omniroute.ticket.": TicketEvent,
        "omniroute.sla.": SlaEvent,
        **dict.fromkeys(INCIDENT_EVENT_TYPES, Incident),
    }
)


@dataclass
class Inputs:
    messages: list[MessageReceived] = field(default_factory=list)
    customers: list[Customer] = field(default_factory=list)
    deleted: set[str] = field(default_factory=set)  # customer ids (tombstones)
    tickets: list[tuple[TicketEvent, str]] = field(default_factory=list)  # (event, ce id)
    sla: list[tuple[SlaEvent, str]] = field(default_factory=list)
    incidents: list[tuple[Incident, str]] = field(default_factory=list)
    dead: list[OutboundEvent] = field(default_factory=list)


def customer_of(ev: MessageReceived | CustomerUpdated) -> Customer:
    """Notify's copy of a customer's facts: as a message carried them, or a record."""
    if isinstance(ev, MessageReceived):
        return Customer(
            ev.customer_id,
            ev.received_at,
            ev.customer_tier,
            ev.anti_phishing_code,
            ev.customer_language,
        )
    return Customer(ev.customer_id, ev.at, ev.tier, ev.anti_phishing_code, ev.language, ev.version)


def _offset(record: Any) -> tuple[int, int]:
    return (getattr(record, "partition", 0), getattr(record, "offset", 0))


def parse(records: Sequence[Any], now: datetime, on_dead: Callable[[str], None]) -> Inputs:
    """The batch's events by kind, and dead letters for the records that are not one.

    Poison (the consumer kit's rules): a record without `ce_type` or `ce_id`, a type
    notify does not consume (its topics carry only the contract's types: an unknown one is
    parked with its reason, not dropped), and data that fails its type's model.
    """
    decoder = Decoder("notify", INPUTS, on_dead=on_dead, tombstones=frozenset({CUSTOMERS}))
    batch = decoder.decode(records, now)
    got = Inputs(dead=batch.dead)
    # Per customer, the last record on support.customers decides: update or deletion.
    last: dict[str, tuple[tuple[int, int], CustomerUpdated | None]] = {}
    for t in batch.tombstones:
        cur = last.get(t.key)
        if cur is None or cur[0] <= _offset(t.record):
            last[t.key] = (_offset(t.record), None)
    for item in batch.events:
        ev = item.event
        if isinstance(ev, MessageReceived):
            got.messages.append(ev)
            got.customers.append(customer_of(ev))
        elif isinstance(ev, CustomerUpdated):
            cur = last.get(ev.customer_id)
            if cur is None or cur[0] <= _offset(item.record):
                last[ev.customer_id] = (_offset(item.record), ev)
        elif isinstance(ev, TicketEvent):
            got.tickets.append((ev, item.ce_id))
        elif isinstance(ev, SlaEvent):
            got.sla.append((ev, item.ce_id))
        elif isinstance(ev, Incident):
            got.incidents.append((ev, item.ce_id))
    for cid, (_, update) in last.items():
        if update is None:
            got.deleted.add(cid)
        else:
            got.customers.append(customer_of(update))
    got.customers = [c for c in got.customers if c.customer_id not in got.deleted]
    return got
