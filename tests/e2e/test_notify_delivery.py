"""Customers hear back on their own channel: email in their thread over SMTP, chat, social
and phone as signed webhooks to the adapters — and a SIGKILLed sender sends nothing twice.

The SMTP server (aiosmtpd) and the adapters' HTTP endpoint run inside this test process;
ingest, router and notify run as processes on the session's embedded stack.
"""

from __future__ import annotations

import json
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
from shared.embedded import EmbeddedStack
from shared.ids import conversation_id, customer_id
from tests.support.inbound import post_inbound
from tests.support.smtp import Mailbox, smtp_server
from tests.support.waiting import wait_until
from tests.support.webhook_sink import WebhookSink, running_sink

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": f"Bearer {DEV_TOKEN}"}
PROVIDERS = ("smtp", "x", "telegram", "wechat", "twilio", "chatwoot", "generic")
CONCURRENCY = 4


@pytest.fixture(scope="module")
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    with smtp_server() as running:
        yield running


@pytest.fixture(scope="module")
def sink() -> Iterator[WebhookSink]:
    with running_sink(WebhookSink(secrets=dict.fromkeys(PROVIDERS, DEV_SECRET))) as running:
        yield running


@pytest.fixture(scope="module")
def system(
    stack: EmbeddedStack, mailbox: tuple[Mailbox, int], sink: WebhookSink
) -> Iterator[LocalSystem]:
    urls = {
        "generic": f"{sink.url}/chat",
        "phone/generic": f"{sink.url}/phone",
        "telegram": f"{sink.url}/telegram",
    }
    running = LocalSystem(
        stack,
        log_dir=stack.root / "logs" / "notify_delivery",
        mongo_db="e2e_notify_delivery",
        env_overrides={
            "OMNIROUTE_NOTIFY_SMTP_HOST": "127.0.0.1",
            "OMNIROUTE_NOTIFY_SMTP_PORT": str(mailbox[1]),
            "OMNIROUTE_NOTIFY_SMTP_STARTTLS": "false",
            "OMNIROUTE_NOTIFY_SMTP_FROM": "Exchange Support <support@exchange.test>",
            "OMNIROUTE_NOTIFY_WEBHOOK_URLS": json.dumps(urls),
            "OMNIROUTE_NOTIFY_CLAIM_LEASE_S": "2",
            # No sla in this system: acknowledgements go after 1 s without its deadline.
            "OMNIROUTE_NOTIFY_ACK_SLA_WAIT_S": "1",
            "OMNIROUTE_NOTIFY_RETRY_BASE_S": "0.2",
            "OMNIROUTE_NOTIFY_RATE_LIMIT_COUNT": "10",
            "OMNIROUTE_NOTIFY_SEND_CONCURRENCY": str(CONCURRENCY),
        },
    )
    try:
        running.start(names=("ingest", "router", "notify"))
        running.wait_ready(timeout_s=90)
        yield running
    finally:
        running.stop()


# The anti-phishing code reaches notify on events only (its own copy): ingest puts it on
# support.messages and support.customers.
def test_email_acknowledgement_lands_in_the_customers_thread(
    system: LocalSystem, mailbox: tuple[Mailbox, int], db: Any
) -> None:
    # The exchange has set this customer's anti-phishing code.
    address = f"wei.{uuid.uuid4().hex[:6]}@example.org"
    cid = customer_id("email", address)
    reply = httpx.put(
        f"{system.url('ingest')}/v1/customers/{cid}",
        json={
            "identities": [{"kind": "email", "value": address}],
            "anti_phishing_code": "OWL-7731",
        },
        headers=AUTH,
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    # The customer replies (in Chinese) to an earlier email thread.
    inbound_id = f"<{uuid.uuid4().hex}@mail.example.org>"
    earlier = f"<{uuid.uuid4().hex}@mail.example.org>"
    mail = EmailMessage()
    mail["From"] = f"Wei Zhang <{address}>"
    mail["To"] = "support@exchange.test"
    mail["Subject"] = "提现一直没有到账"
    mail["Message-ID"] = inbound_id
    mail["In-Reply-To"] = earlier
    mail["References"] = earlier
    mail["Date"] = format_datetime(datetime.now(UTC))
    mail.set_content("你好，我的提现一直在处理中，已经三个小时了，请帮忙查看。", charset="utf-8")
    [message_id] = post_inbound(system, "email", "smtp", mail.as_bytes(policy=policy.SMTP))
    ticket = wait_until(lambda: db.tickets.find_one({"message_ids": message_id}), 30, "ticket")

    # The acknowledgement arrives at the SMTP server, threaded under the customer's email.
    def ours() -> EmailMessage | None:
        return next((m for m in mailbox[0].snapshot() if m["To"] == address), None)

    ack = wait_until(ours, 30, "acknowledgement email")
    assert ack["In-Reply-To"] == inbound_id
    assert ack["References"].split() == [earlier, inbound_id]
    assert ack["Subject"] == "Re: 提现一直没有到账"
    assert ack["From"].addresses[0].addr_spec == "support@exchange.test"
    assert ack["Message-ID"].endswith("@exchange.test>")
    body = ack.get_body(("plain",))
    assert body is not None
    assert body.get_content_charset() == "utf-8"
    text = body.get_content()
    assert ticket["_id"] in text
    assert "OWL-7731" in text  # the anti-phishing code
    assert text.rstrip().endswith("也绝不会在社交媒体上主动联系您。")  # the anti-scam line, last
    doc = wait_until(
        lambda: db.notifications.find_one(
            {"ticket_id": ticket["_id"], "cause": "acknowledgement", "status": "sent"}
        ),
        10,
        "marked sent",
    )
    assert ack["Message-ID"] == f"<{doc['_id']}@exchange.test>"


def test_chat_social_and_phone_updates_arrive_signed(
    system: LocalSystem, sink: WebhookSink, db: Any
) -> None:
    run = uuid.uuid4().hex[:6]
    router = system.url("router")
    # An agent who accepts chat work at once.
    agent = f"agent-{run}"
    profile = {
        "name": "Ana",
        "languages": ["en", "zh"],
        "capacity": {"chat": 2},
        "auto_accept": True,
    }
    assert httpx.put(f"{router}/v1/agents/{agent}", json=profile, headers=AUTH).status_code == 202
    assert (
        httpx.post(
            f"{router}/v1/agents/{agent}/presence", json={"status": "online"}, headers=AUTH
        ).status_code
        == 202
    )
    wait_until(lambda: db.agents.find_one({"_id": agent, "presence": "online"}), 20, "agent")

    # Live chat, Telegram and a voicemail asking for a callback.
    [chat_id] = post_inbound(
        system,
        "chat",
        "generic",
        chat_message(f"s-{run}", "m1", "My withdrawal is stuck in review", visitor_id=f"v-{run}"),
    )
    tg_user = int(uuid.uuid4().int % 10**9)
    telegram = {
        "update_id": tg_user,
        "message": {
            "message_id": 7,
            "from": {"id": tg_user, "is_bot": False, "first_name": "Wei", "language_code": "zh"},
            "chat": {"id": tg_user, "type": "private"},
            "date": 1_800_000_000,
            "text": "充值未到账，已经两个小时了",
        },
    }
    [tg_id] = post_inbound(system, "social", "telegram", json.dumps(telegram).encode())
    number = f"+4477009{tg_user % 100000:05d}"
    call = {
        "call_id": f"call-{run}",
        "from": number,
        "to": "+448001234567",
        "direction": "inbound",
        "disposition": "voicemail",
        "transcript": "Hello, I cannot log in since I lost my 2FA device. Please call me back.",
    }
    [call_id] = post_inbound(system, "phone", "generic", json.dumps(call).encode())
    tickets = {
        mid: wait_until(lambda m=mid: db.tickets.find_one({"message_ids": m}), 30, "ticket")["_id"]
        for mid in (chat_id, tg_id, call_id)
    }

    def delivered(ticket: str, template: str) -> Any:
        return next(
            (
                d
                for d in sink.accepted()
                if d.json["ticket_id"] == ticket and d.json["template"] == template
            ),
            None,
        )

    chat = wait_until(lambda: delivered(tickets[chat_id], "acknowledgement"), 30, "chat ack")
    tg = wait_until(lambda: delivered(tickets[tg_id], "acknowledgement"), 30, "telegram ack")
    sms = wait_until(lambda: delivered(tickets[call_id], "acknowledgement"), 30, "phone ack")
    for d, path in ((chat, "/chat"), (tg, "/telegram"), (sms, "/phone")):
        assert d.path == path
        assert d.signature_ok  # HMAC-SHA256 of the raw body with the provider's secret
        assert d.headers["idempotency-key"] == d.notification_id
        assert "seed phrase" in d.json["text"] or "助记词" in d.json["text"]
    assert chat.json["to"]["handle"] == f"v-{run}"
    assert chat.json["in_reply_to"] == f"s-{run}:m1"
    assert tg.json["language"] == "zh"
    assert tg.json["to"]["handle"] == str(tg_user)
    assert "助记词" in tg.json["text"]
    assert sms.json["to"] == {**sms.json["to"], "phone": number, "mode": "callback"}

    # The chat ticket's agent works it: the customer hears each step once.
    chat_ticket = tickets[chat_id]
    wait_until(lambda: delivered(chat_ticket, "agent_assigned"), 30, "agent on it")
    for action, template in (("wait", "waiting_for_you"), ("resolve", "resolved")):
        reply = httpx.post(
            f"{router}/v1/tickets/{chat_ticket}/{action}", json={"agent_id": agent}, headers=AUTH
        )
        assert reply.status_code == 202
        wait_until(lambda t=template: delivered(chat_ticket, t), 30, template)
    templates = [d.json["template"] for d in sink.accepted() if d.json["ticket_id"] == chat_ticket]
    assert sorted(templates) == sorted(
        ["acknowledgement", "agent_assigned", "waiting_for_you", "resolved"]
    )


def test_sigkill_mid_batch_sends_nothing_twice(
    system: LocalSystem, sink: WebhookSink, db: Any
) -> None:
    run = uuid.uuid4().hex[:6]
    total = 40
    sessions = [f"k-{run}-{n}" for n in range(total)]
    conversations = {conversation_id("chat", "generic", s) for s in sessions}

    def ours() -> list[Any]:
        return [
            d
            for d in sink.accepted()
            if d.json["conversation_id"] in conversations
            and d.json["template"] == "acknowledgement"
        ]

    # A slow adapter keeps sends in flight when the sender dies.
    sink.delay_s = 0.2
    try:
        for n, session in enumerate(sessions):
            body = chat_message(session, "m1", "Where is my deposit?", visitor_id=f"kv-{run}-{n}")
            post_inbound(system, "chat", "generic", body)
        wait_until(lambda: len(ours()) >= 3, 30, "first deliveries")
        system.kill("notify")  # SIGKILL, mid-batch
        # Not marked sent yet (held by the killed sender: in a round, or still to go).
        in_flight = {d["_id"] for d in db.notifications.find({"status": {"$ne": "sent"}})}
        assert len(ours()) < total, "the kill came too late to be mid-batch"
        system.start_service("notify")
        system.wait_ready(timeout_s=60, names=("notify",))
        wait_until(lambda: len({d.notification_id for d in ours()}) == total, 60, "every ack")
    finally:
        sink.delay_s = 0.0
    # A send that completed just before the kill, but was not yet marked, is due again
    # only when its claim's lease runs out: wait for every mark, then count the sends.
    acks = {d.notification_id for d in ours()}
    wait_until(
        lambda: (
            db.notifications.count_documents({"_id": {"$in": list(acks)}, "status": "sent"})
            == total
        ),
        90,
        "every ack marked sent",
    )
    counts: dict[str, int] = {}
    for d in ours():
        counts[d.notification_id] = counts.get(d.notification_id, 0) + 1
    twice = {nid for nid, n in counts.items() if n > 1}
    # Only a send of the round in flight at the kill may arrive again (at least once; the
    # receiver dedupes on the idempotency key) — nothing already marked sent.
    assert twice <= in_flight
    assert len(twice) <= CONCURRENCY
    assert (
        db.notifications.count_documents({"_id": {"$in": list(counts)}, "status": "sent"}) == total
    )
