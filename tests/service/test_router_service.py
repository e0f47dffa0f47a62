"""The router app's Kafka wiring, in memory: FastStream's TestKafkaBroker and a fake store."""

from __future__ import annotations

import json
from typing import Any

from faststream.kafka import KafkaBroker, TestKafkaBroker
from pymongo import AsyncMongoClient

from services.router.app import build_app
from shared.contracts.agents import (
    AGENT_PRESENCE_CHANGED,
    AGENT_PROFILE_UPDATED,
    AgentPresenceChanged,
    AgentProfile,
    AgentProfileUpdated,
)
from shared.contracts.messages import MESSAGE_RECEIVED
from shared.events import make_event, publish_all
from shared.settings import RouterSettings
from shared.topics import AGENTS, DEADLETTER, MESSAGES, TICKETS
from tests.support.factories import T0, message
from tests.support.fakes import FakeRouterStore, HeldLease


async def test_message_in_ticket_events_out() -> None:
    settings = RouterSettings(kafka_create_topics=False)
    broker = KafkaBroker(settings.kafka_bootstrap)
    store = FakeRouterStore()
    # The client never connects: the fake store stands in for MongoDB.
    build_app(
        settings,
        broker=broker,
        inputs=broker,
        mongo=AsyncMongoClient(connect=False),
        store=store,
        lease=HeldLease(),  # type: ignore[arg-type]
    )
    seen: list[dict[str, Any]] = []
    dead: list[dict[str, Any]] = []

    @broker.subscriber(TICKETS)
    async def capture(body: dict[str, Any]) -> None:
        seen.append(body)

    @broker.subscriber(DEADLETTER)
    async def capture_dead(body: dict[str, Any]) -> None:
        dead.append(body)

    async with TestKafkaBroker(broker) as br:
        profile = AgentProfile(name="A", auto_accept=True)
        await publish_all(
            br,
            [
                make_event(
                    AgentProfileUpdated(agent_id="a1", profile=profile, at=T0),
                    topic=AGENTS,
                    event_type=AGENT_PROFILE_UPDATED,
                    event_id="e1",
                    source="t",
                    key="a1",
                    time=T0,
                ),
                make_event(
                    AgentPresenceChanged(agent_id="a1", status="online", at=T0),
                    topic=AGENTS,
                    event_type=AGENT_PRESENCE_CHANGED,
                    event_id="e2",
                    source="t",
                    key="a1",
                    time=T0,
                ),
            ],
        )
        m = message(7, category="deposit")
        await publish_all(
            br,
            [
                make_event(
                    m,
                    topic=MESSAGES,
                    event_type=MESSAGE_RECEIVED,
                    event_id=m.message_id,
                    source="t",
                    key=m.conversation_id,
                    time=T0,
                )
            ],
        )
        # A poison message between good ones: dead-lettered, nothing else disturbed.
        await br.publish(b"{not json", MESSAGES, headers={"ce_type": MESSAGE_RECEIVED})

    assert [e["event"] for e in seen] == ["opened", "assigned"]
    assert seen[1]["agent_id"] == "a1"
    assert seen[1]["priority"] == "P2"
    assert len(dead) == 1
    assert dead[0]["service"] == "router"
    assert dead[0]["reason"].startswith("invalid omniroute.message.received.v1")
    ticket = next(iter(store.tickets.values()))
    assert ticket["state"] == "assigned"
    assert store.outbox == []  # published, then cleared
    assert json.loads(json.dumps(ticket["decision"]))["chosen"] == "a1"
