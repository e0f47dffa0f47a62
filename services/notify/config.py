"""Notify's settings turned into its delivery configuration and transports."""

from __future__ import annotations

import httpx

from services.notify.delivery import DeliveryConfig
from services.notify.outbox import RateRule
from services.notify.senders import SmtpTransport, Transports
from shared.settings import NotifySettings


def make_transports(settings: NotifySettings, client: httpx.AsyncClient) -> Transports:
    smtp = None
    if settings.notify_smtp_host:
        smtp = SmtpTransport(
            host=settings.notify_smtp_host,
            port=settings.notify_smtp_port,
            from_addr=settings.notify_smtp_from,
            starttls=settings.notify_smtp_starttls,
            timeout_s=settings.notify_smtp_timeout_s,
            username=settings.notify_smtp_username,
            password=settings.notify_smtp_password,
        )
    return Transports(
        smtp=smtp,
        urls=settings.notify_webhook_urls,
        secrets=settings.webhook_secrets,
        client=client,
        log_unrouted=settings.notify_log_unrouted,
    )


def delivery_config(settings: NotifySettings) -> DeliveryConfig:
    return DeliveryConfig(
        retry_base_s=settings.notify_retry_base_s,
        retry_max_s=settings.notify_retry_max_s,
        max_attempts=settings.notify_max_attempts,
        lease_s=settings.notify_claim_lease_s,
        batch_size=settings.notify_batch_size,
        concurrency=settings.notify_send_concurrency,
        route_wait_s=settings.notify_route_wait_s,
        rate=RateRule(settings.notify_rate_limit_count, settings.notify_rate_limit_window_s),
        poll_interval_s=settings.notify_poll_interval_s,
        metrics_interval_s=settings.notify_metrics_interval_s,
        sweep_interval_s=settings.notify_sweep_interval_s,
    )
