"""Settings: environment variables prefixed OMNIROUTE_, safe defaults for the embedded stack."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "dev-token", "secret", "dev-secret"})
REPO_POLICY_DIR = Path(__file__).resolve().parents[1] / "policy"


class ServiceSettings(BaseSettings):
    """Settings every service reads. Each service subclasses it with its own default port."""

    model_config = SettingsConfigDict(env_prefix="OMNIROUTE_", extra="ignore", frozen=True)

    service_name: str = "omniroute"
    environment: Literal["development", "production"] = "development"
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_create_topics: bool = True
    # Off by default: Tansu has no InitProducerId. Turn on against real Kafka.
    kafka_idempotent_producer: bool = False
    kafka_session_timeout_ms: int = 10_000
    kafka_heartbeat_interval_ms: int = 3_000
    kafka_max_batch: int = 500
    mongo_uri: str = "mongodb://127.0.0.1:27017/?directConnection=true"
    mongo_db: str = "omniroute"
    mongo_timeout_ms: int = 5_000
    api_token: SecretStr = SecretStr("dev-token")
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    policy_dir: Path = REPO_POLICY_DIR
    log_level: str = "INFO"
    webhook_secrets: dict[str, SecretStr] = Field(
        default_factory=lambda: {
            p: SecretStr("dev-secret")
            for p in ("smtp", "x", "telegram", "wechat", "twilio", "chatwoot", "generic")
        },
        description="provider -> HMAC secret for signed webhooks",
    )

    @model_validator(mode="after")
    def _no_placeholders_in_production(self) -> ServiceSettings:
        if self.environment != "production":
            return self
        if self.api_token.get_secret_value() in PLACEHOLDER_SECRETS:
            raise ValueError("OMNIROUTE_API_TOKEN is missing or a placeholder in production")
        weak = sorted(
            p
            for p, s in self.webhook_secrets.items()
            if s.get_secret_value() in PLACEHOLDER_SECRETS
        )
        if weak:
            raise ValueError(f"placeholder webhook secrets in production for: {', '.join(weak)}")
        return self


class IngestSettings(ServiceSettings):
    service_name: str = "ingest"
    http_port: int = 8081
    max_body_bytes: int = 1_048_576


class RouterSettings(ServiceSettings):
    service_name: str = "router"
    http_port: int = 8082
    lease_ttl_s: float = 6.0


class SlaSettings(ServiceSettings):
    service_name: str = "sla"
    http_port: int = 8083
    lease_ttl_s: float = 6.0
    tick_interval_s: float = 0.05


class NotifySettings(ServiceSettings):
    service_name: str = "notify"
    http_port: int = 8084
