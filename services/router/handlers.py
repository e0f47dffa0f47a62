"""Router's Kafka edge: the input contracts it consumes, and its decisions as the
CloudEvents it publishes on support.tickets. The engine host that applies them is in
engine.py.
"""

from __future__ import annotations

from shared.consume import Contracts
from shared.contracts.agents import (
    AGENT_ACTION_TAKEN,
    AGENT_PRESENCE_CHANGED,
    AGENT_PROFILE_UPDATED,
    AgentActionTaken,
    AgentPresenceChanged,
    AgentProfileUpdated,
)
from shared.contracts.messages import MESSAGE_RECEIVED, MessageReceived
from shared.contracts.sla import SlaEvent
from shared.contracts.tickets import TicketEvent, ticket_event_type
from shared.erasure import ERASURE_INPUTS
from shared.events import OutboundEvent, make_event
from shared.ids import event_id
from shared.topics import TICKETS

SOURCE = "omniroute/router"


# Every type on the router's input topics is in the contract: one it does not know is
# dead-lettered, not dropped.
INPUTS = Contracts(
    {
        MESSAGE_RECEIVED: MessageReceived,
        AGENT_PROFILE_UPDATED: AgentProfileUpdated,
        AGENT_PRESENCE_CHANGED: AgentPresenceChanged,
        AGENT_ACTION_TAKEN: AgentActionTaken,
        "omniroute.sla.": SlaEvent,
        **ERASURE_INPUTS.models,
    }
)


def ticket_event(ev: TicketEvent) -> OutboundEvent:
    return make_event(
        ev,
        topic=TICKETS,
        event_type=ticket_event_type(ev.event),
        event_id=event_id("ticket", ev.ticket_id, str(ev.sequence)),
        source=SOURCE,
        key=ev.ticket_id,
        time=ev.at,
        subject=ev.ticket_id,
    )
