"""Settings: environment variables prefixed OMNIROUTE_, safe defaults for the embedded stack."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "dev-token", "secret", "dev-secret"})
REPO_POLICY_DIR = Path(__file__).resolve().parents[1] / "policy"
REPO_DATA_DIR = Path(__file__).resolve().parents[1] / "data"


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
    # The classifier: a model file built by `omniroute classify train` from the corpus.
    # Missing, it is trained from the corpus at start-up (seconds) and saved if it can be.
    classifier_model: Path = REPO_DATA_DIR / "classify" / "model.npz"
    classifier_corpus: Path = REPO_DATA_DIR / "classify" / "corpus"


class RouterSettings(ServiceSettings):
    service_name: str = "router"
    http_port: int = 8082
    lease_ttl_s: float = 6.0
    # How often the lease holder's clock looks for expired offers and away agents' work.
    tick_interval_s: float = 0.05


class SlaSettings(ServiceSettings):
    service_name: str = "sla"
    http_port: int = 8083
    lease_ttl_s: float = 6.0
    # The clock sleeps until the next threshold falls due (or a batch changes the timers);
    # this is only the longest it sleeps between checks.
    tick_interval_s: float = 0.5
    # Finished timers stay in memory this long, so redelivered ticket events are skipped.
    dedupe_window_s: float = 86_400.0
    # Thresholds fired per journal step; more due at once go in the next step at once.
    max_fire_per_step: int = 1000
    # Published journal entries are folded into sla_timers at most this often.
    compact_interval_s: float = 0.25


class NotifySettings(ServiceSettings):
    service_name: str = "notify"
    http_port: int = 8084
    # Email: replies go out over SMTP in the customer's thread. No host: email not sent.
    notify_smtp_host: str | None = None
    # Development: a notification with no configured transport is logged as delivered
    # instead of dead-lettered (`omniroute dev`). Refused in production.
    notify_log_unrouted: bool = False
    notify_smtp_port: int = 587
    notify_smtp_starttls: bool = True
    notify_smtp_username: str | None = None
    notify_smtp_password: SecretStr | None = None
    notify_smtp_from: str = "Support <support@omniroute.invalid>"
    notify_smtp_timeout_s: float = Field(default=10.0, gt=0)
    # Chat, social and phone: a signed JSON POST to the exchange's adapter for the provider.
    notify_webhook_urls: dict[str, str] = Field(
        default_factory=dict,
        description='"provider" or "channel/provider" -> URL, e.g. {"telegram": "http://…",'
        ' "phone/generic": "http://…"}; a provider left out gets no messages',
    )
    notify_webhook_timeout_s: float = Field(default=5.0, gt=0)
    # Outbox: retries with exponential backoff, then a dead letter.
    notify_retry_base_s: float = Field(default=2.0, gt=0)
    notify_retry_max_s: float = Field(default=300.0, gt=0)
    notify_max_attempts: int = Field(default=6, ge=1)
    notify_claim_lease_s: float = Field(default=30.0, gt=0)
    notify_poll_interval_s: float = Field(default=0.2, gt=0)
    # Notifications read per sender pass. SecantusDB reads every due document to return the
    # first N, so a backlog of 10,000 cost ~0.4 s per pass whatever N: big passes keep the
    # sender ahead of a surge (docs/benchmarks.md).
    notify_batch_size: int = Field(default=1000, ge=1)
    notify_send_concurrency: int = Field(default=16, ge=1)
    # A notification waits this long for its conversation's route, then is given up.
    notify_route_wait_s: float = Field(default=3600.0, gt=0)
    # Per customer: at most this many messages per window; the rest wait (or are merged).
    notify_rate_limit_count: int = Field(default=3, ge=1)
    notify_rate_limit_window_s: float = Field(default=60.0, gt=0)
    # Expected first response: the SLA target, or longer when the queue ahead is longer.
    notify_queue_seconds_per_ticket: float = Field(default=60.0, ge=0)
    notify_metrics_interval_s: float = Field(default=5.0, gt=0)
    notify_status_recent_days: int = Field(default=7, ge=0)
    notify_retention_days: int = Field(default=90, ge=1)

    @model_validator(mode="after")
    def _no_log_transport_in_production(self) -> NotifySettings:
        if self.environment == "production" and self.notify_log_unrouted:
            raise ValueError("OMNIROUTE_NOTIFY_LOG_UNROUTED is for development only")
        return self
