"""Every event type the services publish is read by the official CloudEvents SDK."""

from __future__ import annotations

from typing import Any

import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary_event

from services.router.handlers import ticket_event
from services.sla.handlers import sla_event
from shared.contracts.agents import (
    AGENT_ACTION_TAKEN,
    AGENT_PRESENCE_CHANGED,
    AGENT_PROFILE_UPDATED,
    AgentActionTaken,
    AgentPresenceChanged,
    AgentProfile,
    AgentProfileUpdated,
)
from shared.contracts.messages import MESSAGE_RECEIVED
from shared.contracts.notifications import NOTIFICATION_RECORDED, NotificationRecorded
from shared.contracts.sla import SlaEvent
from shared.contracts.tickets import TICKET_EVENT_NAMES
from shared.deadletter import dead_letter
from shared.events import OutboundEvent, make_event
from tests.support.factories import T0, message
from tests.support.factories import ticket_event as make_ticket_event


def to_sdk(event: OutboundEvent) -> Any:
    return from_binary_event(
        KafkaMessage(
            headers={k: v.encode() for k, v in event.headers.items()},
            key=event.key,
            value=event.value,
        )
    )


def published_events() -> list[OutboundEvent]:
    events = [
        make_event(
            message(),
            topic="support.messages",
            event_type=MESSAGE_RECEIVED,
            event_id="msg_1",
            source="omniroute/ingest",
            key="cnv_1",
            time=T0,
        ),
        dead_letter(service="ingest", reason="invalid json", payload=b"\xff{", now=T0),
        make_event(
            NotificationRecorded(
                notification_id="n",
                ticket_id="t",
                customer_id="c",
                channel="chat",
                template="acknowledgement",
                language="en",
                status="recorded",
                cause_event_id="e",
                at=T0,
            ),
            topic="support.notifications",
            event_type=NOTIFICATION_RECORDED,
            event_id="n",
            source="omniroute/notify",
            key="t",
            time=T0,
        ),
        make_event(
            AgentProfileUpdated(agent_id="a", profile=AgentProfile(name="A"), at=T0),
            topic="support.agents",
            event_type=AGENT_PROFILE_UPDATED,
            event_id="1",
            source="omniroute/router-api",
            key="a",
            time=T0,
        ),
        make_event(
            AgentPresenceChanged(agent_id="a", status="online", at=T0),
            topic="support.agents",
            event_type=AGENT_PRESENCE_CHANGED,
            event_id="2",
            source="omniroute/router-api",
            key="a",
            time=T0,
        ),
        make_event(
            AgentActionTaken(agent_id="a", ticket_id="t", action="accept", at=T0),
            topic="support.agents",
            event_type=AGENT_ACTION_TAKEN,
            event_id="3",
            source="omniroute/router-api",
            key="a",
            time=T0,
        ),
    ]
    events += [
        ticket_event(make_ticket_event(name, i + 1)) for i, name in enumerate(TICKET_EVENT_NAMES)
    ]
    for name in ("started", "warning", "breached", "met", "paused", "resumed", "cancelled"):
        events.append(
            sla_event(
                SlaEvent(
                    timer_id="tmr",
                    ticket_id="t",
                    event=name,
                    metric="first_response",  # type: ignore[arg-type]
                    due_at=T0,
                    elapsed_s=1,
                    target_s=60,
                    priority="P1",
                    channel="chat",
                    customer_id="c",
                    at=T0,
                )
            )
        )
    return events


@pytest.mark.parametrize("event", published_events(), ids=lambda e: e.type)
def test_sdk_reads_every_published_event(event: OutboundEvent) -> None:
    ce = to_sdk(event)
    assert ce.get_specversion() == "1.0"
    assert ce.get_id() == event.id
    assert ce.get_type() == event.type
    assert ce.get_type().startswith("omniroute.") and ce.get_type().endswith(".v1")
    assert ce.get_time() is not None and ce.get_time().tzinfo is not None
    assert isinstance(ce.get_data(), dict)


def test_ticket_event_ids_are_deterministic() -> None:
    a = ticket_event(make_ticket_event("opened", 1))
    b = ticket_event(make_ticket_event("opened", 1))
    c = ticket_event(make_ticket_event("opened", 2))
    assert a.id == b.id != c.id


def test_naive_time_is_refused() -> None:
    from datetime import datetime

    with pytest.raises(ValueError, match="time zone"):
        make_event(
            message(),
            topic="t",
            event_type="x",
            event_id="1",
            source="s",
            key=None,
            time=datetime(2026, 1, 1),
        )
