"""The development log transport: only where nothing is configured, never in production."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from services.notify.route import Route
from services.notify.senders import LogTransport, Transports, WebhookTransport
from shared.settings import NotifySettings

ROUTE = Route(conversation_id="cnv_1", channel="chat", provider="generic", customer_id="c")


def transports(log_unrouted: bool, urls: dict[str, str] | None = None) -> Transports:
    return Transports(
        smtp=None,
        urls=urls or {},
        secrets={"generic": SecretStr("s")},
        client=httpx.AsyncClient(),
        log_unrouted=log_unrouted,
    )


def test_unrouted_is_dead_unless_logging_is_on() -> None:
    assert transports(False).for_route(ROUTE) is None
    assert isinstance(transports(True).for_route(ROUTE), LogTransport)


def test_a_configured_transport_wins_over_the_log() -> None:
    found = transports(True, {"chat/generic": "http://127.0.0.1:9/x"}).for_route(ROUTE)
    assert isinstance(found, WebhookTransport)


def test_production_refuses_the_log_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIROUTE_ENVIRONMENT", "production")
    monkeypatch.setenv("OMNIROUTE_WEBHOOK_SECRETS", '{"generic": "real-secret-9f8e"}')
    monkeypatch.setenv("OMNIROUTE_NOTIFY_LOG_UNROUTED", "true")
    with pytest.raises(ValidationError, match="development only"):
        NotifySettings()
