"""SLA's Kafka edge: the input contracts it consumes (ticket events, erasures), its
decisions as the CloudEvents it publishes on support.sla, and a step's changes grouped
for the journal. The engine that applies them is in engine.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from shared.consume import Contracts
from shared.contracts.sla import SlaEvent, sla_event_type
from shared.contracts.tickets import TicketEvent
from shared.erasure import ERASURE_INPUTS
from shared.events import OutboundEvent, make_event
from shared.ids import event_id
from shared.topics import SLA

SOURCE = "omniroute/sla"


def sla_event(ev: SlaEvent) -> OutboundEvent:
    # One id per cause: (timer, threshold) for warnings and breaches — each fires once —
    # and (timer, what, ticket event) for the rest. A replay produces the same ids.
    parts = [ev.timer_id, ev.event]
    if ev.ticket_sequence is not None:
        parts.append(str(ev.ticket_sequence))
    return make_event(
        ev,
        topic=SLA,
        event_type=sla_event_type(ev.event),
        event_id=event_id("sla", *parts),
        source=SOURCE,
        key=ev.ticket_id,
        time=ev.at,
        subject=ev.ticket_id,
    )


@dataclass
class Step:
    """What one step changed, grouped by ticket so a journal entry never splits a ticket."""

    tickets: dict[str, tuple[dict[str, Any], list[OutboundEvent]]] = field(default_factory=dict)
    progress: dict[str, int] = field(default_factory=dict)
    other: list[OutboundEvent] = field(default_factory=list)  # dead letters
    decided: list[SlaEvent] = field(default_factory=list)
    reload: bool = False  # a decision raised: memory may hold half of its changes

    def add(self, ticket_id: str, timers: Iterable[Any], events: Iterable[OutboundEvent]) -> None:
        changed, evs = self.tickets.setdefault(ticket_id, ({}, []))
        for t in timers:
            changed[t.timer_id] = t
        evs.extend(events)

    @property
    def events(self) -> list[OutboundEvent]:
        return [e for _, evs in self.tickets.values() for e in evs] + self.other

    def __bool__(self) -> bool:
        return bool(self.tickets or self.other)


# support.tickets carries only ticket events: anything else is dead-lettered.
INPUTS = Contracts({"omniroute.ticket.": TicketEvent, **ERASURE_INPUTS.models})
