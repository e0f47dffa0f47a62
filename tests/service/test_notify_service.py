"""Notify's Kafka edge with its stores in memory: what is recorded for message, customer,
ticket, SLA and incident events, what the customer is told about their wait, and what is
announced. The wiring (subscription, dead letters) runs on FastStream's TestKafkaBroker;
the time-driven decisions (sweeps) on a Notifier with a clock the test moves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient

from services.notify.app import build_app
from services.notify.estimate import Deadline, EstimatePolicy, load_policy
from services.notify.handlers import Notifier
from services.notify.metrics import NotifyMetrics
from services.notify.render import load_templates
from services.router.handlers import ticket_event
from services.sla.handlers import sla_event
from shared.contracts.customers import CUSTOMER_UPDATED, CustomerUpdated
from shared.contracts.incidents import Affected, Incident, incident_event_type
from shared.contracts.messages import Amount, Signals
from shared.events import OutboundEvent, make_event, publish_all
from shared.settings import NotifySettings
from shared.topics import CUSTOMERS, DEADLETTER, INCIDENTS, NOTIFICATIONS, TICKETS
from shared.wiring import Given
from tests.support.factories import T0, message_event
from tests.support.factories import sla_event as make_sla_event
from tests.support.factories import ticket_event as make_ticket_event
from tests.support.fakes import FakeNotify, Record, record_of
from tests.support.kafka import captured

POLICY = Path(__file__).resolve().parents[2] / "policy"
TEMPLATES = load_templates(POLICY / "templates.yaml")


def opened(tid: str = "tkt_1", **over: Any) -> OutboundEvent:
    # The edge's notifier runs on the real clock: its tickets open now.
    now = datetime.now(UTC)
    return ticket_event(
        make_ticket_event("opened", 1, ticket_id=tid, at=now, opened_at=now, **over)
    )


def started(
    tid: str = "tkt_1", target_s: float = 900, base: datetime | None = None, **over: Any
) -> OutboundEvent:
    """sla's first-response timer for `tid`, due `target_s` after `base` (default: now)."""
    base = base or datetime.now(UTC)
    data: dict[str, Any] = {
        "timer_id": f"tmr_{tid}",
        "ticket_id": tid,
        "target_s": target_s,
        "due_at": base + timedelta(seconds=target_s),
        "elapsed_s": 0,
        "at": base,
        **over,
    }
    return sla_event(make_sla_event("started", **data))


def customer_record(
    cid: str, version: int, code: str | None, language: str | None = None
) -> OutboundEvent:
    c = CustomerUpdated(
        customer_id=cid, anti_phishing_code=code, language=language, version=version, at=T0
    )
    return make_event(
        c,
        topic=CUSTOMERS,
        event_type=CUSTOMER_UPDATED,
        event_id=f"cus-{cid}-{version}",
        source="t",
        key=cid,
        time=T0,
    )


def tombstone(cid: str) -> Record:
    """A compacted topic's deletion: the key, no value."""
    return Record(topic=CUSTOMERS, value=None, key=cid.encode())  # type: ignore[arg-type]


# -- the edge, on FastStream's in-memory broker ----------------------------------------


@dataclass
class Edge:
    broker: Any
    fake: FakeNotify
    announced: list[dict[str, Any]]
    dead: list[dict[str, Any]]

    async def send(self, *events: OutboundEvent) -> None:
        await publish_all(self.broker, events)


@pytest.fixture
async def edge() -> AsyncIterator[Edge]:
    broker = KafkaBroker("127.0.0.1:1")
    fake = FakeNotify()
    # The client never connects: the fakes stand in for MongoDB; no sender loop.
    build_app(
        NotifySettings(kafka_create_topics=False),
        Given(broker=broker, mongo=AsyncMongoClient(connect=False)),
        stores=fake.stores,
        start_sender=False,
    )
    announced = captured(broker, NOTIFICATIONS)
    dead = captured(broker, DEADLETTER)

    async with TestKafkaBroker(broker) as br:
        yield Edge(br, fake, announced, dead)


async def test_acknowledgement_waits_for_the_deadline_and_quotes_it_once(edge: Edge) -> None:
    # A VIP P3 email: sla's vip rule makes its first-response target 300 s, not 1,800.
    ack_of_vip = opened(language="zh", category="secret_exposed", priority="P3", channel="email")
    await edge.send(message_event(1, anti_phishing_code="OWL-7731", customer_tier="vip5"))
    await edge.send(ack_of_vip)
    assert edge.fake.outbox.notifications == {}  # nothing promised before sla's deadline
    await edge.send(started(target_s=300, priority="P3", channel="email", customer_tier="vip5"))
    await edge.send(ack_of_vip)  # redelivered
    poison = {"ce_type": "omniroute.ticket.opened.v1", "ce_id": "poison-1"}
    await edge.broker.publish(b"[]", TICKETS, headers=poison)

    [ack] = edge.fake.outbox.notifications.values()
    assert (ack.language, ack.template, ack.status) == (
        "zh",
        "acknowledgement_secret_exposed",
        "pending",
    )
    assert "新钱包" in ack.text
    assert "OWL-7731" in ack.text  # from notify's own copy, fed by the message
    # Nothing measured yet: the SLA target, due 300 s after opening.
    assert "我们的目标是约 5 分钟内回复您" in ack.text
    assert "第 1 位" in ack.text
    assert ack.text.endswith("也绝不会在社交媒体上主动联系您。")
    assert {a["notification_id"] for a in edge.announced} == {ack.notification_id}
    assert [d["reason"] for d in edge.dead] == ["invalid ticket event"]


async def test_deadline_before_the_ticket_event_is_kept_for_it(edge: Edge) -> None:
    await edge.send(started(target_s=300))  # support.sla overtook support.tickets
    assert edge.fake.outbox.notifications == {}
    await edge.send(opened())
    ack = edge.fake.outbox.of("tkt_1")["acknowledgement"]
    assert "our target is a reply within about 5 minutes" in ack.text


async def test_customers_topic_updates_notify_copy_and_a_tombstone_deletes_it(
    edge: Edge,
) -> None:
    await edge.send(message_event(1, anti_phishing_code="OLD-1"))
    await edge.send(customer_record("cus_1", 2, "NEW-2", language="zh"))
    await edge.send(customer_record("cus_1", 1, "STALE-1"))  # an older version: ignored
    copy = edge.fake.customers.customers["cus_1"]
    assert (copy.anti_phishing_code, copy.language, copy.version) == ("NEW-2", "zh", 2)

    await edge.send(opened(), started())
    ack = edge.fake.outbox.of("tkt_1")["acknowledgement"]
    assert "您的防钓鱼码：NEW-2" in ack.text  # the preferred language too
    assert ack.language == "zh"

    # A tombstone (null value, keyed by customer id): the copy goes, nothing is dead-lettered.
    await edge.broker.publish(None, CUSTOMERS, key=b"cus_1")
    assert "cus_1" not in edge.fake.customers.customers
    assert edge.dead == []


# -- the notifier with a clock the test moves -----------------------------------------


@dataclass
class Desk:
    fake: FakeNotify = field(default_factory=FakeNotify)
    now: datetime = T0
    offset: int = 0
    notifier: Notifier = field(init=False)

    def __post_init__(self) -> None:
        self.notifier = Notifier(
            stores=self.fake.stores,
            templates=TEMPLATES,
            policy=load_policy(POLICY / "notify.yaml").estimate,
            metrics=NotifyMetrics.create(CollectorRegistry()),
            sla_wait_s=30,
            clock=lambda: self.now,
        )

    async def send(self, *events: OutboundEvent | Record) -> list[OutboundEvent]:
        records = []
        for e in events:
            self.offset += 1
            records.append(
                record_of(e, self.offset)
                if isinstance(e, OutboundEvent)
                else replace(e, offset=self.offset)
            )
        return await self.notifier.process(records)

    def at(self, seconds: float) -> None:
        self.now = T0 + timedelta(seconds=seconds)

    def told(self, tid: str, cause: str = "acknowledgement") -> str:
        return self.fake.outbox.of(tid)[cause].text


def tev(event: str, seq: int, tid: str, at_s: float, **over: Any) -> OutboundEvent:
    at = T0 + timedelta(seconds=at_s)
    state = {"opened": "queued", "queued": "queued", "offered": "offered"}.get(event, "assigned")
    return ticket_event(
        make_ticket_event(event, seq, ticket_id=tid, at=at, opened_at=at, state=state, **over)
    )


async def measured(desk: Desk, waits_s: list[float], priority: str = "P4") -> None:
    """Tickets queued one at a time (each first in line) and assigned after `waits_s`."""
    for n, wait in enumerate(waits_s):
        tid = f"m{n}"
        start = -10_000 + n * 1000
        await desk.send(tev("opened", 1, tid, start, priority=priority))
        await desk.send(tev("assigned", 2, tid, start + wait, priority=priority, agent_id="a1"))


async def test_position_and_estimate_from_measured_assignments() -> None:
    desk = Desk()
    await measured(desk, [40, 50, 60])  # 50 s per place (the weighted median)
    assert [s.per_place_s for s in desk.fake.queue.samples] == [40, 50, 60]
    # 30 P4 tickets queued, then one more: number 31, 31 x 50 s = 26 minutes.
    for n in range(30):
        await desk.send(tev("opened", 1, f"q{n}", n, priority="P4", channel="email"))
    await desk.send(tev("opened", 1, "late", 40, priority="P4", channel="email"))
    await desk.send(started("late", base=T0, target_s=14_400, priority="P4", channel="email"))
    text = desk.told("late")
    assert "You are number 31 in the queue; we expect an agent to reply within about 26" in text
    assert desk.fake.outbox.of("late")["acknowledgement"].position == 31
    # A VIP customer is served first within P4: only those VIPs ahead count.
    vip = tev("opened", 1, "vip", 45, priority="P4", customer_tier="vip6")
    await desk.send(vip, started("vip", base=T0, target_s=600, priority="P4"))
    assert "You are number 1 in the queue" in desk.told("vip")
    # A higher priority waits behind none of them.
    await desk.send(tev("opened", 1, "urgent", 50, priority="P2"), started("urgent", base=T0))
    assert "You are number 1 in the queue" in desk.told("urgent")
    assert desk.fake.tickets.views["urgent"].position == 1


async def test_an_estimate_past_the_sla_due_says_so() -> None:
    desk = Desk()
    await measured(desk, [100, 100, 100])
    for n in range(9):
        await desk.send(tev("opened", 1, f"q{n}", n, priority="P4"))
    await desk.send(tev("opened", 1, "t", 10, priority="P4"))
    # Number 10 at 100 s a place: 17 minutes; the chat P4 target is 10.
    await desk.send(started("t", base=T0, target_s=600, priority="P4"))
    text = desk.told("t")
    assert "within about 17 minutes: that is later than our target" in text
    assert "a reply within about 10 minutes" in text


async def test_a_closed_desk_counts_from_its_opening() -> None:
    desk = Desk()
    await measured(desk, [60, 60, 60])
    await desk.send(tev("opened", 1, "night", 0, priority="P4"))
    # sla's calendar: the desk opens in 9 hours; the 4-hour target counts from then.
    opens = T0 + timedelta(hours=9)
    await desk.send(
        started(
            "night", base=T0, target_s=14_400, due_at=opens + timedelta(hours=4), calendar="emea"
        )
    )
    text = desk.told("night")
    assert "closed now and opens within about 9 hours" in text
    # One place at 60 s after the opening: 9 hours and a minute.
    assert "reply within about 10 hours" in text


async def test_without_sla_the_acknowledgement_goes_after_the_wait_and_promises_nothing() -> None:
    desk = Desk()
    await desk.send(tev("opened", 1, "t", 0))
    desk.at(29)
    assert await desk.notifier.sweep() == []
    desk.at(31)
    [announced] = await desk.notifier.sweep()
    text = desk.told("t")
    assert "We cannot give you a reliable time yet" in text
    assert "within" not in text
    # sla's deadline coming late changes nothing: one acknowledgement per ticket.
    await desk.send(started("t", base=T0))
    assert await desk.notifier.sweep() == []
    assert list(desk.fake.outbox.of("t")) == ["acknowledgement"]
    assert announced.id == desk.fake.outbox.of("t")["acknowledgement"].notification_id


async def test_halves_stored_by_two_replicas_at_once_are_acknowledged_within_seconds() -> None:
    desk = Desk()
    await desk.send(tev("opened", 1, "t", 0))
    # Another replica stored sla's deadline while this one stored the ticket: neither saw
    # the other's half, so no batch decided it.
    deadline = Deadline(600, T0 + timedelta(seconds=600), T0)
    await desk.fake.acks.deadlines([("t", deadline)], T0)
    assert desk.fake.outbox.notifications == {}
    desk.at(3)
    await desk.notifier.sweep()
    assert "our target is a reply within about 10 minutes" in desk.told("t")


async def test_a_wrong_estimate_is_corrected_once() -> None:
    desk = Desk()
    await measured(desk, [60, 60, 60])
    await desk.send(
        tev("opened", 1, "a", 0, priority="P4"), tev("opened", 1, "b", 1, priority="P4")
    )
    await desk.send(started("b", base=T0, target_s=3600, priority="P4"))
    assert "number 2 in the queue; we expect an agent to reply within about 2 minutes" in (
        desk.told("b")
    )
    # Told 120 s; the margin is max(50 %, 120 s): at 240 s still waiting, it was wrong.
    desk.at(239)
    await desk.notifier.sweep()
    assert "estimate_corrected" not in desk.fake.outbox.of("b")
    desk.at(241)
    await desk.notifier.sweep()
    corrected = desk.told("b", "estimate_corrected")
    assert "taking longer than we told you" in corrected
    assert "You are number 2 in the queue" in corrected
    desk.at(10_000)
    await desk.notifier.sweep()
    desk.at(20_000)
    await desk.notifier.sweep()
    # Once per ticket: "b", and "a" (acknowledged without sla at 30 s, also still waiting).
    assert desk.notifier.metrics.corrections._value.get() == 2
    assert desk.fake.acks.acks["b"].recheck_at is None


async def test_no_correction_once_an_agent_has_it() -> None:
    desk = Desk()
    await measured(desk, [60, 60, 60])
    await desk.send(tev("opened", 1, "b", 0, priority="P4"), started("b", base=T0, priority="P4"))
    await desk.send(tev("assigned", 2, "b", 30, priority="P4", agent_id="a1"))
    desk.at(10_000)
    await desk.notifier.sweep()
    assert "estimate_corrected" not in desk.fake.outbox.of("b")
    assert [s.wait_s for s in desk.fake.queue.samples][-1] == 30


async def test_in_one_batch_the_last_record_of_a_customer_decides() -> None:
    desk = Desk()
    await desk.send(customer_record("cus_1", 3, "X"), tombstone("cus_1"))
    assert desk.fake.customers.customers == {}
    await desk.send(tombstone("cus_2"), customer_record("cus_2", 4, "Y"))
    assert desk.fake.customers.customers["cus_2"].anti_phishing_code == "Y"
    assert await desk.send(Record(topic=CUSTOMERS, value=None, key=None)) != []  # type: ignore[arg-type]


async def test_sla_breach_brings_an_apology_with_a_new_estimate(edge: Edge) -> None:
    await edge.send(ticket_event(make_ticket_event("opened", 1, language="zh")))
    breach = make_sla_event("breached")
    await edge.send(sla_event(breach))
    await edge.send(sla_event(breach))
    apology = edge.fake.outbox.of("tkt_1")["sla_breached:tmr_1"]
    assert "非常抱歉" in apology.text
    assert "约 8 分钟内" in apology.text  # nothing measured: half the 900 s target again


def incident_event(inc: Incident) -> OutboundEvent:
    return make_event(
        inc,
        topic=INCIDENTS,
        event_type=incident_event_type(inc),
        event_id=f"inc-{inc.version}",
        source="t",
        key=inc.incident_id,
        time=inc.updated_at,
    )


async def test_incident_updates_matching_open_tickets_once_and_again_at_resolution(
    edge: Edge,
) -> None:
    # Three open tickets: a BTC withdrawal, an ETH withdrawal, a deposit.
    for n, (category, asset) in enumerate(
        [("withdrawal", "BTC"), ("withdrawal", "ETH"), ("deposit", "BTC")]
    ):
        await edge.send(
            message_event(
                n,
                conversation_id=f"cnv_{n}",
                category=category,
                signals=Signals(amounts=(Amount(value=1, asset=asset),)),
            ),
            ticket_event(
                make_ticket_event(
                    "opened", 1, ticket_id=f"t{n}", conversation_id=f"cnv_{n}", category=category
                )
            ),
            started(f"t{n}"),
        )
    inc = Incident(
        incident_id="inc_1",
        status="investigating",
        severity="major",
        title={"en": "BTC withdrawals delayed", "zh": "BTC 提现延迟"},
        body={"en": "Network congestion."},
        affected=Affected(categories=("withdrawal",), assets=("BTC",)),
        version=1,
        created_at=T0,
        updated_at=T0,
    )
    await edge.send(incident_event(inc))
    await edge.send(incident_event(inc.model_copy(update={"status": "identified", "version": 2})))
    outbox, incidents = edge.fake.outbox, edge.fake.incidents
    assert set(outbox.of("t0")) == {"acknowledgement", "incident:inc_1:open"}
    assert "BTC withdrawals delayed" in outbox.of("t0")["incident:inc_1:open"].text
    assert set(outbox.of("t1")) == {"acknowledgement"}
    assert set(outbox.of("t2")) == {"acknowledgement"}
    assert incidents.links == {("inc_1", "t0")}

    # A new BTC withdrawal ticket hears about the incident in its acknowledgement.
    await edge.send(
        message_event(
            9,
            conversation_id="cnv_9",
            signals=Signals(amounts=(Amount(value=2, asset="BTC"),)),
        ),
        ticket_event(
            make_ticket_event(
                "opened", 1, ticket_id="t9", conversation_id="cnv_9", category="withdrawal"
            )
        ),
        started("t9"),
    )
    ack = outbox.of("t9")["acknowledgement"]
    assert "Known issue — BTC withdrawals delayed: Network congestion." in ack.text
    assert outbox.of("t9")["incident:inc_1:open"].status == "merged"
    assert ("inc_1", "t9") in incidents.links

    # Resolved: one more update to each linked ticket, and a stale redelivery changes nothing.
    resolved = inc.model_copy(update={"status": "resolved", "version": 3, "resolved_at": T0})
    await edge.send(incident_event(resolved))
    await edge.send(incident_event(inc))
    resolutions = {
        n.ticket_id for n in outbox.notifications.values() if n.cause == "incident:inc_1:resolved"
    }
    assert resolutions == {"t0", "t9"}
    incident_ones = [n for n in outbox.notifications.values() if n.incident_id == "inc_1"]
    assert len(incident_ones) == 4  # t0 and t9: one update (t9's merged) and one resolution


def test_estimate_policy_file_is_valid() -> None:
    assert load_policy(POLICY / "notify.yaml").estimate == EstimatePolicy()
