"""Settings come from OMNIROUTE_* variables; production refuses placeholder secrets."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from shared.auth import digest, new_key
from shared.settings import IngestSettings, NotifySettings, RouterSettings, SlaSettings


def test_defaults_point_at_the_embedded_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OMNIROUTE_KAFKA_BOOTSTRAP", "OMNIROUTE_MONGO_URI", "OMNIROUTE_HTTP_PORT"):
        monkeypatch.delenv(var, raising=False)
    s = RouterSettings()
    assert s.http_port == 8082
    assert s.kafka_bootstrap.startswith("127.0.0.1:")
    assert IngestSettings().http_port == 8081


def test_each_service_has_its_own_database_unless_overridden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OMNIROUTE_MONGO_DB", raising=False)
    names = {s().mongo_db for s in (IngestSettings, RouterSettings, SlaSettings, NotifySettings)}
    assert names == {"omniroute_ingest", "omniroute_router", "omniroute_sla", "omniroute_notify"}
    monkeypatch.setenv("OMNIROUTE_MONGO_DB", "exchange_router")
    assert RouterSettings().mongo_db == "exchange_router"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIROUTE_KAFKA_BOOTSTRAP", "kafka:9092")
    monkeypatch.setenv("OMNIROUTE_WEBHOOK_SECRETS", '{"generic": "s3cr3t-value"}')
    s = IngestSettings()
    assert s.kafka_bootstrap == "kafka:9092"
    assert s.webhook_secrets["generic"].get_secret_value() == "s3cr3t-value"


def test_production_never_accepts_the_development_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIROUTE_ENVIRONMENT", "production")
    monkeypatch.setenv("OMNIROUTE_WEBHOOK_SECRETS", '{"generic": "9b1f3c-real"}')
    monkeypatch.delenv("OMNIROUTE_API_TOKEN", raising=False)
    # Unset, production has no development key at all ...
    assert RouterSettings().development_token() is None
    # ... and set, however long, it stops the service with the reason.
    monkeypatch.setenv("OMNIROUTE_API_TOKEN", "a-long-real-token-0f9e8d-7c6b5a")
    with pytest.raises(ValidationError, match="OMNIROUTE_API_TOKEN"):
        RouterSettings()
    # Development: the development key opens everything, `dev-token` by default.
    monkeypatch.setenv("OMNIROUTE_ENVIRONMENT", "development")
    monkeypatch.delenv("OMNIROUTE_API_TOKEN")
    assert RouterSettings().development_token() == "dev-token"


def test_production_refuses_development_and_placeholder_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OMNIROUTE_ENVIRONMENT", "production")
    monkeypatch.setenv("OMNIROUTE_WEBHOOK_SECRETS", '{"generic": "9b1f3c-real"}')
    monkeypatch.delenv("OMNIROUTE_API_TOKEN", raising=False)
    _, dev = new_key("dev-desk", "desk", ("tickets:read",), development=True)
    _, real = new_key("desk-2026a", "desk", ("tickets:read",))
    placeholder = {"client": "desk", "sha256": digest("changeme"), "scopes": ["tickets:read"]}
    for bad in ({"dev-desk": dev.model_dump()}, {"desk-old": placeholder}):
        monkeypatch.setenv("OMNIROUTE_API_KEYS", json.dumps(bad))
        with pytest.raises(ValidationError, match="API keys in production"):
            RouterSettings()
    monkeypatch.setenv("OMNIROUTE_API_KEYS", json.dumps({"desk-2026a": real.model_dump()}))
    assert set(RouterSettings().api_keys) == {"desk-2026a"}


def test_keys_are_named_scoped_and_at_most_two_per_client() -> None:
    def key(client: str, *scopes: str) -> dict[str, object]:
        return {"client": client, "sha256": digest(client + "-secret"), "scopes": list(scopes)}

    ok = RouterSettings.model_validate(
        {"api_keys": {"desk-a": key("desk", "tickets:read"), "desk-b": key("desk", "tickets:act")}}
    )
    assert {k.client for k in ok.api_keys.values()} == {"desk"}
    with pytest.raises(ValidationError, match="at most 2 keys per client"):
        RouterSettings.model_validate(
            {"api_keys": {f"desk-{i}": key("desk", "tickets:read") for i in range(3)}}
        )
    with pytest.raises(ValidationError, match="scopes"):
        RouterSettings.model_validate({"api_keys": {"desk-a": key("desk", "tickets:everything")}})
    with pytest.raises(ValidationError, match="key ids"):
        RouterSettings.model_validate({"api_keys": {"Desk.A": key("desk", "tickets:read")}})


def test_jwt_needs_issuer_audience_and_a_public_key_algorithm() -> None:
    with pytest.raises(ValidationError, match="ISSUER"):
        RouterSettings(jwt_public_key="-----BEGIN PUBLIC KEY-----")
    with pytest.raises(ValidationError, match="public-key algorithms"):
        RouterSettings(
            jwt_public_key="-----BEGIN PUBLIC KEY-----",
            jwt_issuer="https://idp/",
            jwt_audience="omniroute",
            jwt_algorithms=("HS256",),
        )


def test_production_refuses_placeholder_webhook_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIROUTE_ENVIRONMENT", "production")
    monkeypatch.delenv("OMNIROUTE_API_TOKEN", raising=False)
    monkeypatch.setenv("OMNIROUTE_WEBHOOK_SECRETS", '{"generic": "changeme"}')
    with pytest.raises(ValidationError, match="generic"):
        IngestSettings()
    monkeypatch.setenv("OMNIROUTE_WEBHOOK_SECRETS", '{"generic": "9b1f3c-real"}')
    assert IngestSettings().environment == "production"


def test_secrets_do_not_leak_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIROUTE_API_TOKEN", "super-secret-token-value")
    assert "super-secret-token-value" not in repr(RouterSettings())
