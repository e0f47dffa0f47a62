"""What goes on the wire: the email reply in the customer's thread, the signed webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
from email import policy
from email.parser import BytesParser

import pytest

from services.notify.route import EmailRoute, Route
from services.notify.senders import (
    Outgoing,
    build_email,
    reply_subject,
    sign,
    webhook_body,
    webhook_url,
)
from tests.support.factories import T0

OUT = Outgoing(
    notification_id="ntf_abc",
    ticket_id="tkt_1",
    conversation_id="cnv_1",
    channel="email",
    template="acknowledgement",
    language="zh",
    subject="您的客服工单 tkt_1",
    text="我们已收到您的请求（工单号 tkt_1）。\n\n我们绝不会索要您的密码。",
    at=T0,
)


def email_route(**thread: object) -> Route:
    return Route(
        conversation_id="cnv_1",
        channel="email",
        provider="smtp",
        customer_id="cus_1",
        identities=(("email", "wei@example.org"),),
        email=EmailRoute(**thread),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("inbound", "expected"),
    [
        ("提现未到账", "Re: 提现未到账"),
        ("Re: withdrawal", "Re: withdrawal"),
        ("RE:  withdrawal  stuck", "RE: withdrawal stuck"),
        ("回复：提现", "回复：提现"),
        ("AW: Auszahlung", "AW: Auszahlung"),
        ("", "您的客服工单 tkt_1"),
        (None, "您的客服工单 tkt_1"),
    ],
)
def test_reply_subject_prefixes_re_once(inbound: str | None, expected: str) -> None:
    assert reply_subject(inbound, "您的客服工单 tkt_1") == expected


def test_email_reply_threads_under_the_customers_message_in_utf8() -> None:
    route = email_route(
        message_id="m2@mail.example.org",
        references=("m1@mail.example.org", "m2@mail.example.org"),
        subject="提现未到账",
        reply_to="wei.replies@example.org",
    )
    msg = build_email(OUT, route, "Exchange Support <support@exchange.test>")
    wire = msg.as_bytes(policy=policy.SMTP)
    parsed = BytesParser(policy=policy.default).parsebytes(wire)
    assert parsed["To"] == "wei.replies@example.org"  # Reply-To wins over From
    assert parsed["In-Reply-To"] == "<m2@mail.example.org>"
    assert parsed["References"] == "<m1@mail.example.org> <m2@mail.example.org>"
    assert parsed["Subject"] == "Re: 提现未到账"
    assert parsed["Message-ID"] == "<ntf_abc@exchange.test>"
    assert parsed["Auto-Submitted"] == "auto-replied"
    body = parsed.get_body(("plain",))
    assert body is not None
    assert body.get_content_charset() == "utf-8"
    assert body.get_content().replace("\r\n", "\n").rstrip() == OUT.text
    assert all(b < 128 for b in wire)  # 7-bit clean on the wire: encoded words and base64/QP


def test_email_without_thread_uses_our_subject_and_the_senders_address() -> None:
    msg = build_email(OUT, email_route(), "support@exchange.test")
    assert msg["To"] == "wei@example.org"
    assert msg["Subject"] == "您的客服工单 tkt_1"
    assert msg["In-Reply-To"] is None


def test_webhook_url_prefers_channel_and_provider() -> None:
    urls = {"generic": "http://chat", "phone/generic": "http://phone", "telegram": "http://tg"}
    assert webhook_url(urls, "chat", "generic") == "http://chat"
    assert webhook_url(urls, "phone", "generic") == "http://phone"
    assert webhook_url(urls, "social", "telegram") == "http://tg"
    assert webhook_url(urls, "social", "x") is None


def test_webhook_body_names_the_recipient_and_is_signed_like_inbound() -> None:
    route = Route(
        conversation_id="cnv_9",
        channel="phone",
        provider="twilio",
        customer_id="cus_9",
        kind="callback_request",
        identities=(("phone", "+447700900123"),),
        callback_number="+447700900999",
        last_provider_message_id="CA123",
    )
    body = webhook_body(OUT, route)
    data = json.loads(body)
    assert data["to"]["phone"] == "+447700900999"
    assert data["to"]["mode"] == "callback"
    assert (data["notification_id"], data["in_reply_to"]) == ("ntf_abc", "CA123")
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert sign("s3cret", body) == expected
