"""Settings come from OMNIROUTE_* variables; production refuses placeholder secrets."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.settings import IngestSettings, RouterSettings


def test_defaults_point_at_the_embedded_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OMNIROUTE_KAFKA_BOOTSTRAP", "OMNIROUTE_MONGO_URI", "OMNIROUTE_HTTP_PORT"):
        monkeypatch.delenv(var, raising=False)
    s = RouterSettings()
    assert s.http_port == 8082
    assert s.kafka_bootstrap.startswith("127.0.0.1:")
    assert IngestSettings().http_port == 8081


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIROUTE_KAFKA_BOOTSTRAP", "kafka:9092")
    monkeypatch.setenv("OMNIROUTE_WEBHOOK_SECRETS", '{"generic": "s3cr3t-value"}')
    s = IngestSettings()
    assert s.kafka_bootstrap == "kafka:9092"
    assert s.webhook_secrets["generic"].get_secret_value() == "s3cr3t-value"


def test_production_refuses_placeholder_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIROUTE_ENVIRONMENT", "production")
    monkeypatch.delenv("OMNIROUTE_API_TOKEN", raising=False)
    with pytest.raises(ValidationError, match="OMNIROUTE_API_TOKEN"):
        RouterSettings()


def test_production_refuses_placeholder_webhook_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIROUTE_ENVIRONMENT", "production")
    monkeypatch.setenv("OMNIROUTE_API_TOKEN", "a-long-real-token-0f9e8d")
    monkeypatch.setenv("OMNIROUTE_WEBHOOK_SECRETS", '{"generic": "changeme"}')
    with pytest.raises(ValidationError, match="generic"):
        IngestSettings()
    monkeypatch.setenv("OMNIROUTE_WEBHOOK_SECRETS", '{"generic": "9b1f3c-real"}')
    assert IngestSettings().environment == "production"


def test_secrets_do_not_leak_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIROUTE_API_TOKEN", "super-secret-token-value")
    assert "super-secret-token-value" not in repr(RouterSettings())
