"""Deterministic ids: the same cause always gets the same id, so effects are idempotent."""

from __future__ import annotations

import hashlib


def stable_id(prefix: str, *parts: str, length: int = 24) -> str:
    """`prefix_<hex>` from the parts; parts are joined with NUL so ("a", "bc") != ("ab", "c")."""
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
    return f"{prefix}_{digest[:length]}"


def message_id(provider: str, provider_message_id: str) -> str:
    return stable_id("msg", provider, provider_message_id)


def customer_id(identity_kind: str, identity_value: str) -> str:
    return stable_id("cus", identity_kind, identity_value, length=20)


def conversation_id(channel: str, provider: str, conversation_key: str) -> str:
    return stable_id("cnv", channel, provider, conversation_key, length=20)


def event_id(kind: str, *parts: str) -> str:
    """Id of an event derived from what caused it (CloudEvents `id`)."""
    return stable_id("evt", kind, *parts, length=32)
