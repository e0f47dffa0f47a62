"""Customers are told the truth (issue 14): the acknowledgement quotes the deadline sla set
(tier, category and calendar included), the wait is measured from the queue, and facts
changed through the API show in the next notification.

Ingest, router, sla and notify run as processes on the session's embedded stack; a real
SMTP server (aiosmtpd) and the adapters' webhook endpoint run in this test process.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from omniroute.samples import chat_message
from omniroute.system import DEV_SECRET, DEV_TOKEN, LocalSystem
from services.notify.estimate import EstimatePolicy, Sample, pace_s
from shared.embedded import EmbeddedStack
from shared.ids import customer_id
from tests.support.inbound import post_inbound
from tests.support.smtp import Mailbox, smtp_server
from tests.support.waiting import wait_until
from tests.support.webhook_sink import WebhookSink, running_sink

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": f"Bearer {DEV_TOKEN}"}


@pytest.fixture(scope="module")
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    with smtp_server() as running:
        yield running


@pytest.fixture(scope="module")
def sink() -> Iterator[WebhookSink]:
    with running_sink(WebhookSink(secrets={"generic": DEV_SECRET})) as running:
        yield running


@pytest.fixture(scope="module")
def system(
    stack: EmbeddedStack, mailbox: tuple[Mailbox, int], sink: WebhookSink
) -> Iterator[LocalSystem]:
    running = LocalSystem(
        stack,
        log_dir=stack.root / "logs" / "notify_truth",
        mongo_db="e2e_notify_truth",
        env_overrides={
            "OMNIROUTE_NOTIFY_SMTP_HOST": "127.0.0.1",
            "OMNIROUTE_NOTIFY_SMTP_PORT": str(mailbox[1]),
            "OMNIROUTE_NOTIFY_SMTP_STARTTLS": "false",
            "OMNIROUTE_NOTIFY_SMTP_FROM": "Exchange Support <support@exchange.test>",
            "OMNIROUTE_NOTIFY_WEBHOOK_URLS": json.dumps({"generic": f"{sink.url}/chat"}),
            "OMNIROUTE_NOTIFY_RATE_LIMIT_COUNT": "10",
        },
    )
    try:
        running.start()
        running.wait_ready(timeout_s=90)
        yield running
    finally:
        running.stop()


def put_customer(system: LocalSystem, address: str, **facts: Any) -> str:
    cid = customer_id("email", address)
    reply = httpx.put(
        f"{system.url('ingest')}/v1/customers/{cid}",
        json={"identities": [{"kind": "email", "value": address}], **facts},
        headers=AUTH,
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    return cid


def email(address: str, subject: str, text: str) -> bytes:
    mail = EmailMessage()
    mail["From"] = address
    mail["To"] = "support@exchange.test"
    mail["Subject"] = subject
    mail["Message-ID"] = f"<{uuid.uuid4().hex}@mail.example.org>"
    mail["Date"] = format_datetime(datetime.now(UTC))
    mail.set_content(text, charset="utf-8")
    return mail.as_bytes(policy=policy.SMTP)


def mail_to(mailbox: tuple[Mailbox, int], address: str, n: int = 1) -> list[str]:
    """The first `n` plain-text bodies sent to `address`, waiting for them."""

    def bodies() -> list[str] | None:
        found = []
        for m in mailbox[0].snapshot():
            if m["To"] == address and (body := m.get_body(("plain",))) is not None:
                found.append(body.get_content())
        return found if len(found) >= n else None

    return wait_until(bodies, 60, f"{n} emails to the customer")


def agent(system: LocalSystem, db: Any, aid: str, capacity: dict[str, int]) -> None:
    router = system.url("router")
    profile = {"name": aid, "languages": ["en", "zh"], "capacity": capacity, "auto_accept": True}
    assert httpx.put(f"{router}/v1/agents/{aid}", json=profile, headers=AUTH).status_code == 202
    presence = httpx.post(
        f"{router}/v1/agents/{aid}/presence", json={"status": "online"}, headers=AUTH
    )
    assert presence.status_code == 202
    wait_until(lambda: db.agents.find_one({"_id": aid, "presence": "online"}), 20, "agent")


def test_a_vip_p3_email_is_told_the_vip_first_response_target(
    system: LocalSystem, mailbox: tuple[Mailbox, int], db: Any
) -> None:
    # A vip5 customer writes by email about 2FA (P3): sla's vip rule says 300 s, not 1,800.
    address = f"vip.{uuid.uuid4().hex[:6]}@example.org"
    put_customer(system, address, tier="vip5")
    [mid] = post_inbound(
        system,
        "email",
        "smtp",
        email(address, "Lost my 2FA", "I lost my 2FA authenticator and cannot log in."),
    )
    ticket = wait_until(lambda: db.tickets.find_one({"message_ids": mid}), 30, "ticket")
    assert (ticket["priority"], ticket["customer_tier"]) == ("P3", "vip5")
    [text] = mail_to(mailbox, address)
    assert "our target is a reply within about 5 minutes" in text
    assert "30 minutes" not in text
    timer = wait_until(
        lambda: db.sla_timers.find_one({"ticket_id": ticket["_id"], "metric": "first_response"}),
        10,
        "sla timer",
    )
    assert (timer["target_s"], timer["policy"]) == (300, "vip")


def test_a_p4_behind_thirty_is_told_its_place_and_a_measured_estimate(
    system: LocalSystem, sink: WebhookSink, db: Any
) -> None:
    run = uuid.uuid4().hex[:6]

    def chat(n: str) -> str:
        body = chat_message(f"s-{run}-{n}", "m1", "How do I read the fee table?", visitor_id=n)
        [mid] = post_inbound(system, "chat", "generic", body)
        return mid

    def ticket_of(mid: str) -> dict[str, Any]:
        return wait_until(lambda: db.tickets.find_one({"message_ids": mid}), 30, "ticket")

    # Three P4 chats wait with nobody online; then an agent takes them: measured waits.
    measured = [chat(f"m{n}") for n in range(3)]
    first = [ticket_of(m) for m in measured]
    assert {t["priority"] for t in first} == {"P4"}
    wait_until(
        lambda: all(db.tickets.find_one({"_id": t["_id"], "state": "queued"}) for t in first),
        30,
        "queued",
    )
    agent(system, db, f"a-{run}", {"chat": 3})  # busy with them from now on
    wait_until(
        lambda: (
            sum(len(d.get("samples", [])) for d in db.notify_queue_stats.find({"_id": "P4"})) >= 3
        ),
        30,
        "assignments measured",
    )

    # Thirty more P4 chats queue behind a full agent, then one more customer writes.
    behind = [chat(f"q{n}") for n in range(30)]
    wait_until(
        lambda: all(db.tickets.find_one({"message_ids": m, "state": "queued"}) for m in behind),
        60,
        "thirty queued",
    )
    ahead = db.tickets.count_documents({"state": "queued"})
    last = ticket_of(chat("last"))

    def told() -> Any:
        return next(
            (
                d
                for d in sink.accepted()
                if d.json["ticket_id"] == last["_id"] and d.json["template"] == "acknowledgement"
            ),
            None,
        )

    text = wait_until(told, 60, "acknowledgement")
    text = text.json["text"]
    stored = db.notifications.find_one({"ticket_id": last["_id"], "cause": "acknowledgement"})
    assert stored["position"] == ahead + 1 >= 31
    assert f"You are number {ahead + 1} in the queue" in text
    # The estimate: the queue's measured pace (seconds per place) times the place.
    [stats] = db.notify_queue_stats.find({"_id": "P4"})
    samples = [
        Sample("P4", s["ticket_id"], s["cycle"], s["wait_s"], s["position"], s["at"])
        for s in stats["samples"]
    ]
    pace = pace_s(samples, EstimatePolicy())
    assert pace is not None
    assert stored["expected_s"] == pytest.approx(pace * (ahead + 1), rel=0.05, abs=2)
    minutes = max(1, math.ceil(stored["expected_s"] / 60))
    assert f"we expect an agent to reply within about {minutes} minutes" in text
    assert minutes < ahead  # not the old fixed minute per ticket ahead


def test_a_changed_anti_phishing_code_shows_in_the_next_notification(
    system: LocalSystem, mailbox: tuple[Mailbox, int], db: Any
) -> None:
    address = f"apc.{uuid.uuid4().hex[:6]}@example.org"
    put_customer(system, address, anti_phishing_code="OWL-1111")
    [mid] = post_inbound(
        system, "email", "smtp", email(address, "Order question", "Why was my order cancelled?")
    )
    ticket = wait_until(lambda: db.tickets.find_one({"message_ids": mid}), 30, "ticket")
    [ack] = mail_to(mailbox, address)
    assert "OWL-1111" in ack
    # The exchange changes the code through the API; then an agent takes the ticket.
    put_customer(system, address, anti_phishing_code="FOX-2222")
    agent(system, db, f"mail-{uuid.uuid4().hex[:6]}", {"email": 10})
    wait_until(
        lambda: db.notifications.find_one(
            {"ticket_id": ticket["_id"], "cause": "agent_assigned:1"}
        ),
        60,
        "agent_assigned",
    )
    _, assigned = mail_to(mailbox, address, 2)
    assert "FOX-2222" in assigned
    assert "OWL-1111" not in assigned
