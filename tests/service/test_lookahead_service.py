"""The look-ahead's service halves with in-memory fakes: ingest's triage and promotion,
and the router applying a P1 message early through its engine's normal step."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from faststream.kafka import KafkaBroker, KafkaMessage, TestKafkaBroker
from prometheus_client import CollectorRegistry

from omniroute.samples import chat_message
from services.ingest.handlers import Ingestor
from services.ingest.intake import inbound_from_record
from services.ingest.lookahead import IngestLookahead, likely_p1
from services.ingest.metrics import IngestMetrics
from services.ingest.pipeline import IngestPolicy
from services.router.engine import RouterEngine
from services.router.lookahead import RouterLookahead, p1_message
from services.router.metrics import RouterMetrics
from services.router.priority import load_policy
from services.router.state import RouterState
from shared.contracts.messages import MESSAGE_RECEIVED
from shared.journal import BrokerOutput, MemoryJournal
from shared.settings import REPO_POLICY_DIR
from shared.topics import DEADLETTER, INBOUND_CHAT, MESSAGES, TICKETS
from tests.service.test_router_service import Clock, agent_events
from tests.support.classifier import classify_policy, text_model
from tests.support.factories import message_event
from tests.support.fakes import (
    FakeCustomerStore,
    FakeRouterStore,
    FakeTrainingStore,
    HeldLease,
    Record,
    record_of,
)

THEFT = "Someone logged into my account and withdrew all my BTC, I did not authorize this"
ORDINARY = [
    "How do I change the fee tier on my spot trading account?",
    "my deposit has not arrived yet, it has been an hour",
    "where can I find the KYC form for my company account",
]


def ingestor() -> Ingestor:
    return Ingestor(
        customers=FakeCustomerStore(),
        rules=classify_policy(),
        model=text_model(),
        texts=FakeTrainingStore(),
        policy=IngestPolicy(),
        metrics=IngestMetrics.create(CollectorRegistry()),
    )


def inbound(n: int, text: str, offset: int) -> Record:
    return Record(
        INBOUND_CHAT,
        chat_message(f"s{n}", f"m{n}", text),
        headers=[("provider", b"generic")],
        offset=offset,
    )


def test_triage_finds_the_theft_report_among_ordinary_questions_and_junk() -> None:
    batch = [inbound(i, ORDINARY[i % 3], i) for i in range(30)]
    batch.insert(17, inbound(99, THEFT, 17))
    batch.append(Record(INBOUND_CHAT, b"\xff not json", headers=[("provider", b"generic")]))
    batch.append(Record(INBOUND_CHAT, b"x" * 2_000_000, headers=[("provider", b"generic")]))
    flags = likely_p1(batch, ingestor())
    assert [i for i, urgent in enumerate(flags) if urgent] == [17]


def test_triage_counts_a_possible_p1_as_p1() -> None:
    # The ordinary questions' likeliest categories are not P1; with thresholds this low a
    # P1 category is possible for each, which routes them P1: the look-ahead promotes them.
    batch = [inbound(i, ORDINARY[i], i) for i in range(3)]
    ing = ingestor()
    cautious = ing.rules.model_copy(
        update={
            "urgent": ing.rules.urgent.model_copy(
                update={"thresholds": dict.fromkeys(ing.rules.urgent.categories, 1e-6)}
            )
        }
    )

    assert likely_p1(batch, ing) == [False, False, False]
    assert likely_p1(batch, replace(ing, rules=cautious)) == [True, True, True]


async def test_promotion_publishes_the_message_the_in_order_pass_publishes_again() -> None:
    broker = KafkaBroker("localhost:9092")
    seen: list[tuple[str, str]] = []

    @broker.subscriber(MESSAGES, DEADLETTER)
    async def capture(body: dict[str, Any], msg: KafkaMessage) -> None:
        topic = "deadletter" if "reason" in body else MESSAGES
        seen.append((topic, str(msg.headers.get("ce_id", ""))))

    ing = ingestor()
    report = inbound(99, THEFT, 5)
    junk = Record(INBOUND_CHAT, b"\xff not json", headers=[("provider", b"generic")])
    async with TestKafkaBroker(broker) as br:
        await IngestLookahead(ing, br).promote([report, junk])
        # Only the report's message goes ahead; the junk's dead letter is the in-order
        # pass's, so it is never sent twice.
        assert [t for t, _ in seen] == [MESSAGES]
        early = seen[0][1]
        # The in-order pass processes the same record: the same deterministic event id.
        events = await ing.process([inbound_from_record(report)])
        assert [e.headers["ce_id"] for e in events] == [early]
        assert json.loads(events[0].value)["category"] == "stolen_funds"


async def test_the_router_applies_a_p1_early_and_the_in_order_pass_finds_it_applied() -> None:
    broker = KafkaBroker("localhost:9092")
    seen: list[dict[str, Any]] = []

    @broker.subscriber(TICKETS)
    async def capture(body: dict[str, Any]) -> None:
        seen.append(body)

    store = FakeRouterStore()
    async with TestKafkaBroker(broker) as br:
        engine = RouterEngine(
            state=RouterState(load_policy(REPO_POLICY_DIR / "routing.yaml")),
            store=store,
            journal=MemoryJournal(),
            output=BrokerOutput(br),
            metrics=RouterMetrics.create(CollectorRegistry()),
            lease=HeldLease(),
            clock=Clock(),
        )
        await engine.process([record_of(e) for e in agent_events("a1", auto=True)])
        surge = [record_of(message_event(n, category="trading"), offset=n) for n in range(1, 21)]
        report = record_of(message_event(21, category="stolen_funds"), offset=21)
        look = RouterLookahead(engine, lambda: True)

        # Triage marks the P1 only; the look-ahead applies it through the engine's step.
        assert await look.triage([*surge, report]) == [False] * 20 + [True]
        # A possible theft in a withdrawal question opens P1 too: it is marked as well.
        possible = message_event(22, category="withdrawal", possible_urgent="stolen_funds")
        assert await look.triage([record_of(possible, offset=22)]) == [True]
        await look.promote([report])
        assert [(e["event"], e["priority"]) for e in seen] == [("opened", "P1"), ("assigned", "P1")]
        assert seen[-1]["agent_id"] == "a1"
        # Applied: triage no longer marks it, and the in-order pass makes no second ticket.
        assert await look.triage([report]) == [False]
        await engine.process([*surge, report])
        p1 = [e for e in seen if e["category"] == "stolen_funds"]
        assert len(p1) == 2 and len({e["ticket_id"] for e in p1}) == 1
        assert len({e["ticket_id"] for e in seen if e["event"] == "opened"}) == 21


@pytest.mark.parametrize(
    "fields",
    [
        {"category": ["stolen_funds"]},
        {"category": {"$gt": ""}, "possible_urgent": {"$where": "1"}},
        {"possible_urgent": ["stolen_funds"]},
        {"category": None, "possible_urgent": 7},
    ],
)
def test_the_router_triage_leaves_a_hostile_message_to_the_in_order_pass(
    fields: dict[str, Any],
) -> None:
    # Not a string where a category goes (unhashable lists and objects too): not urgent,
    # and no exception that would stop the look-ahead; the in-order pass dead-letters it.
    body = json.dumps({"message_id": "msg_1", **fields}).encode()
    record = Record(MESSAGES, body, headers=[("ce_type", MESSAGE_RECEIVED.encode())])
    p1 = frozenset({"stolen_funds"})
    assert p1_message(record, p1, lambda _id: False) is False
    urgent = json.dumps({"message_id": "msg_1", "possible_urgent": "stolen_funds"}).encode()
    assert p1_message(Record(MESSAGES, urgent, headers=record.headers), p1, lambda _id: False)


async def test_the_router_look_ahead_leaves_everything_to_the_in_order_pass_on_a_standby() -> None:
    engine = RouterEngine(
        state=RouterState(load_policy(REPO_POLICY_DIR / "routing.yaml")),
        store=FakeRouterStore(),
        journal=MemoryJournal(),
        output=BrokerOutput(KafkaBroker("localhost:9092")),
        metrics=RouterMetrics.create(CollectorRegistry()),
    )
    look = RouterLookahead(engine, lambda: False)
    assert not look.active()
    with pytest.raises(RuntimeError, match="lease"):
        await look.promote([record_of(message_event(1, category="stolen_funds"))])
    assert engine.state.tickets == {}
