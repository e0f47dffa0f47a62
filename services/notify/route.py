"""Where a reply goes: one route per conversation, folded from `support.messages`. Pure.

A route document (`notify_conversations`, `_id` = conversation id):

    {"channel": "email", "provider": "smtp", "customer_id": "cus_…", "language": "zh",
     "kind": "message" | "callback_request", "identities": [{"kind", "value"}],
     "callback_number": "+44…" | None, "last_provider_message_id": "…",
     "email": {"message_id": "<…>", "references": ["<…>", …], "subject": "…",
               "reply_to": "a@b.c" | None} | None,
     "assets": ["BTC"], "networks": ["btc"], "last_sent_at": …, "expire_at": …}

The latest message of a conversation sets the route (so a reply threads under the
customer's newest email); assets and networks accumulate (incidents match on them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.contracts.common import Channel
from shared.contracts.messages import MessageReceived

# The identity kind that names the customer on each provider.
HANDLE_KIND = {
    "x": "x",
    "telegram": "telegram",
    "wechat": "wechat",
    "chatwoot": "chatwoot",
    "generic": "chat_visitor",
}


@dataclass(frozen=True)
class EmailRoute:
    message_id: str | None = None
    references: tuple[str, ...] = ()
    subject: str | None = None
    reply_to: str | None = None


@dataclass(frozen=True)
class Route:
    conversation_id: str
    channel: Channel
    provider: str
    customer_id: str
    language: str = "en"
    kind: str = "message"
    identities: tuple[tuple[str, str], ...] = ()
    callback_number: str | None = None
    last_provider_message_id: str | None = None
    email: EmailRoute | None = None
    assets: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()

    def identity(self, kind: str) -> str | None:
        return next((v for k, v in self.identities if k == kind), None)

    @property
    def email_address(self) -> str | None:
        if self.email is not None and self.email.reply_to:
            return self.email.reply_to
        return self.identity("email")

    @property
    def phone(self) -> str | None:
        return self.callback_number or self.identity("phone")

    @property
    def handle(self) -> str | None:
        kind = HANDLE_KIND.get(self.provider)
        return self.identity(kind) if kind else None


@dataclass(frozen=True)
class RouteUpdate:
    """What one batch learned about one conversation."""

    conversation_id: str
    latest: dict[str, Any]  # fields of the newest message: set when newer than the stored one
    sent_at: datetime
    assets: frozenset[str] = field(default_factory=frozenset)
    networks: frozenset[str] = field(default_factory=frozenset)


def route_updates(
    messages: Sequence[MessageReceived], now: datetime, retention_s: float
) -> list[RouteUpdate]:
    """One update per conversation: the newest message's route, every message's facts."""
    by_conv: dict[str, list[MessageReceived]] = {}
    for m in messages:
        by_conv.setdefault(m.conversation_id, []).append(m)
    out = []
    for conv, msgs in by_conv.items():
        newest = max(msgs, key=lambda m: (m.sent_at, m.received_at))
        thread = newest.email_thread
        latest: dict[str, Any] = {
            "channel": newest.channel,
            "provider": newest.provider,
            "customer_id": newest.customer_id,
            "language": newest.language,
            "kind": newest.kind,
            "identities": [{"kind": i.kind, "value": i.value} for i in newest.identities],
            "callback_number": newest.callback_number,
            "last_provider_message_id": newest.provider_message_id,
            "email": None
            if thread is None
            else {
                "message_id": thread.message_id,
                "references": list(thread.references),
                "subject": thread.subject,
                "reply_to": thread.reply_to,
            },
            "last_sent_at": newest.sent_at,
            "expire_at": now + timedelta(seconds=retention_s),
        }
        out.append(
            RouteUpdate(
                conversation_id=conv,
                latest=latest,
                sent_at=newest.sent_at,
                assets=frozenset(a.asset.upper() for m in msgs for a in m.signals.amounts),
                networks=frozenset(w.chain.lower() for m in msgs for w in m.signals.addresses),
            )
        )
    return out


def route_of(doc: Mapping[str, Any]) -> Route:
    email = doc.get("email")
    return Route(
        conversation_id=doc["_id"],
        channel=doc["channel"],
        provider=doc["provider"],
        customer_id=doc.get("customer_id", ""),
        language=doc.get("language", "en"),
        kind=doc.get("kind", "message"),
        identities=tuple((i["kind"], i["value"]) for i in doc.get("identities", [])),
        callback_number=doc.get("callback_number"),
        last_provider_message_id=doc.get("last_provider_message_id"),
        email=None
        if not email
        else EmailRoute(
            message_id=email.get("message_id"),
            references=tuple(email.get("references") or ()),
            subject=email.get("subject"),
            reply_to=email.get("reply_to"),
        ),
        assets=tuple(doc.get("assets", [])),
        networks=tuple(doc.get("networks", [])),
    )
