"""Builders of valid contract objects for tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.router.state import RouterState
from shared.contracts.agents import AgentPresenceChanged, AgentProfile, AgentProfileUpdated
from shared.contracts.messages import MESSAGE_RECEIVED, MessageReceived
from shared.contracts.sla import SlaEvent
from shared.contracts.tickets import TicketEvent
from shared.events import OutboundEvent, make_event
from shared.topics import MESSAGES

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def message(n: int = 1, **over: Any) -> MessageReceived:
    data: dict[str, Any] = {
        "message_id": f"msg_{n}",
        "conversation_id": f"cnv_{n}",
        "channel": "chat",
        "provider": "generic",
        "provider_message_id": f"p{n}",
        "sent_at": T0,
        "received_at": T0,
        "customer_id": f"cus_{n}",
        "text": "hello",
        "language": "en",
        "category": "general",
    }
    data.update(over)
    return MessageReceived.model_validate(data)


def message_event(n: int = 1, **over: Any) -> OutboundEvent:
    """`message(n, **over)` as ingest publishes it on support.messages."""
    m = message(n, **over)
    return make_event(
        m,
        topic=MESSAGES,
        event_type=MESSAGE_RECEIVED,
        event_id=m.message_id,
        source="t",
        key=m.conversation_id,
        time=T0,
    )


def ticket_event(event: str = "opened", seq: int = 1, **over: Any) -> TicketEvent:
    data: dict[str, Any] = {
        "ticket_id": "tkt_1",
        "event": event,
        "priority": "P2",
        "category": "withdrawal",
        "channel": "chat",
        "customer_id": "cus_1",
        "language": "en",
        "at": T0,
        "state": "queued",
        "opened_at": T0,
        "sequence": seq,
    }
    data.update(over)
    return TicketEvent.model_validate(data)


def sla_event(event: str = "breached", **over: Any) -> SlaEvent:
    data: dict[str, Any] = {
        "timer_id": "tmr_1",
        "ticket_id": "tkt_1",
        "event": event,
        "metric": "first_response",
        "due_at": T0,
        "elapsed_s": 900,
        "target_s": 900,
        "priority": "P2",
        "channel": "chat",
        "customer_id": "cus_1",
        "at": T0,
    }
    data.update(over)
    return SlaEvent.model_validate(data)


def agent(state: RouterState, aid: str, *, auto: bool = True, chat: int = 1, **kw: object) -> None:
    """Agent `aid` known to the router's `state` and online (its profile fields in `kw`)."""
    profile = AgentProfile.model_validate(
        {"name": aid, "capacity": {"chat": chat, "email": 2}, "auto_accept": auto, **kw}
    )
    state.on_profile(AgentProfileUpdated(agent_id=aid, profile=profile, at=T0), f"p-{aid}", T0)
    state.on_presence(AgentPresenceChanged(agent_id=aid, status="online", at=T0), f"o-{aid}", T0)
