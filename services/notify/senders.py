"""Transports to the customer: SMTP for email, signed webhooks to the exchange's adapters.

Both carry an idempotency key derived from the notification id — the email's
Message-ID, the webhook's `Idempotency-Key` header and `notification_id` field — so a
receiver dedupes the rare second delivery of at-least-once sending.
Errors are reported as `DeliveryError(reason, permanent)`; reasons are short codes
(`smtp 451`, `http 503`, `connect error`) and never carry addresses or text.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Protocol

import aiosmtplib
import httpx
from pydantic import SecretStr

from services.notify.route import Route

SIGNATURE_HEADER = "X-Omniroute-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLY_PREFIX = re.compile(r"^\s*(re|aw|sv|回复|答复)\s*[:：]", re.IGNORECASE)
TRANSIENT_HTTP = frozenset({408, 425, 429})


log = logging.getLogger(__name__)


class DeliveryError(Exception):
    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


@dataclass(frozen=True)
class Outgoing:
    """A rendered notification, ready for a transport."""

    notification_id: str
    ticket_id: str
    conversation_id: str
    channel: str
    template: str
    language: str
    subject: str
    text: str
    at: datetime


class Transport(Protocol):
    async def send(self, out: Outgoing, route: Route) -> None: ...


def sign(secret: str, body: bytes) -> str:
    """Same scheme as inbound webhooks: `sha256=<hex HMAC-SHA256 of the raw body>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# -- email ------------------------------------------------------------------------------


def reply_subject(inbound: str | None, fallback: str) -> str:
    """ "Re: <their subject>" — once, whatever the client's prefix — or our own subject."""
    if not inbound or not inbound.strip():
        return fallback
    subject = " ".join(inbound.split())
    return subject if REPLY_PREFIX.match(subject) else f"Re: {subject}"


def angle(msg_id: str) -> str:
    """A msg-id as headers carry it: `<left@right>` (ingest stores them bare)."""
    return f"<{msg_id.strip().strip('<>')}>"


def message_id_for(notification_id: str, from_addr: str) -> str:
    domain = parseaddr(from_addr)[1].rpartition("@")[2] or "omniroute.invalid"
    return f"<{notification_id}@{domain}>"


def build_email(out: Outgoing, route: Route, from_addr: str) -> EmailMessage:
    """A plain-text UTF-8 reply in the customer's thread."""
    to = route.email_address
    if not to:
        raise DeliveryError("no email address on route", permanent=True)
    msg = EmailMessage()
    name, addr = parseaddr(from_addr)
    msg["From"] = Address(display_name=name, addr_spec=addr) if name else addr
    msg["To"] = to
    thread = route.email
    msg["Subject"] = reply_subject(thread.subject if thread else None, out.subject)
    msg["Message-ID"] = message_id_for(out.notification_id, from_addr)
    msg["Date"] = format_datetime(out.at)
    if thread is not None and thread.message_id:
        parent = angle(thread.message_id)
        msg["In-Reply-To"] = parent
        refs = [angle(r) for r in thread.references]
        if parent not in refs:
            refs.append(parent)
        msg["References"] = " ".join(refs)
    msg["Auto-Submitted"] = "auto-replied"
    msg["X-Omniroute-Notification-Id"] = out.notification_id
    # 7-bit clean whatever the relay supports: Chinese text goes base64-encoded.
    msg.set_content(out.text, charset="utf-8", cte="7bit" if out.text.isascii() else "base64")
    return msg


@dataclass(frozen=True)
class SmtpTransport:
    host: str
    port: int
    from_addr: str
    starttls: bool
    timeout_s: float
    username: str | None = None
    password: SecretStr | None = None

    async def send(self, out: Outgoing, route: Route) -> None:
        msg = build_email(out, route, self.from_addr)
        try:
            await aiosmtplib.send(
                msg,
                hostname=self.host,
                port=self.port,
                start_tls=self.starttls,
                username=self.username,
                password=self.password.get_secret_value() if self.password else None,
                timeout=self.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = sorted({r.code for r in exc.recipients})
            raise DeliveryError(
                f"smtp recipient refused {codes}", permanent=all(c >= 500 for c in codes)
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryError(f"smtp {exc.code}", permanent=exc.code >= 500) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise DeliveryError(f"smtp {type(exc).__name__}") from exc


# -- webhooks -----------------------------------------------------------------------------


def webhook_body(out: Outgoing, route: Route) -> bytes:
    """What the adapter gets: who, in which conversation, and the text."""
    to: dict[str, object] = {
        "customer_id": route.customer_id,
        "identities": [{"kind": k, "value": v} for k, v in route.identities],
    }
    if route.handle:
        to["handle"] = route.handle
    if route.channel == "phone":
        to["phone"] = route.phone
        to["mode"] = "callback" if route.kind == "callback_request" else "sms"
    body = {
        "notification_id": out.notification_id,
        "ticket_id": out.ticket_id,
        "conversation_id": out.conversation_id,
        "channel": route.channel,
        "provider": route.provider,
        "in_reply_to": route.last_provider_message_id,
        "to": to,
        "language": out.language,
        "template": out.template,
        "text": out.text,
        "at": out.at.isoformat(),
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True)
class WebhookTransport:
    url: str
    secret: str
    client: httpx.AsyncClient

    async def send(self, out: Outgoing, route: Route) -> None:
        body = webhook_body(out, route)
        headers = {
            "content-type": "application/json; charset=utf-8",
            SIGNATURE_HEADER: sign(self.secret, body),
            IDEMPOTENCY_HEADER: out.notification_id,
        }
        try:
            reply = await self.client.post(self.url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise DeliveryError("http timeout") from exc
        except httpx.HTTPError as exc:
            raise DeliveryError("connect error") from exc
        if reply.is_success:
            return
        code = reply.status_code
        transient = code >= 500 or code in TRANSIENT_HTTP
        raise DeliveryError(f"http {code}", permanent=not transient)


def webhook_url(urls: Mapping[str, str], channel: str, provider: str) -> str | None:
    """`channel/provider` first (phone and chat both have a `generic`), then `provider`."""
    return urls.get(f"{channel}/{provider}") or urls.get(provider)


class LogTransport:
    """Development only: a delivery is a log line (ids, never content or addresses)."""

    async def send(self, out: Outgoing, route: Route) -> None:
        log.info(
            "delivered to the log (development transport)",
            extra={"channel": route.channel, "provider": route.provider},
        )


@dataclass(frozen=True)
class Transports:
    smtp: SmtpTransport | None
    urls: Mapping[str, str]
    secrets: Mapping[str, SecretStr]
    client: httpx.AsyncClient
    log_unrouted: bool = False

    def for_route(self, route: Route) -> Transport | None:
        """The transport that reaches this route, or None when none is configured."""
        found = self._configured(route)
        if found is None and self.log_unrouted:
            return LogTransport()
        return found

    def _configured(self, route: Route) -> Transport | None:
        if route.channel == "email":
            return self.smtp
        url = webhook_url(self.urls, route.channel, route.provider)
        secret = self.secrets.get(route.provider)
        if not url or secret is None:
            return None
        return WebhookTransport(url, secret.get_secret_value(), self.client)
