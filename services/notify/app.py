"""Notify's composition root."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import httpx

from services.notify.config import delivery_config, make_transports
from services.notify.delivery import Delivery, Held
from services.notify.erasure import NotifyErasure
from services.notify.estimate import load_policy
from services.notify.handlers import Notifier, announce
from services.notify.http import make_routes
from services.notify.metrics import NotifyMetrics
from services.notify.render import load_templates
from services.notify.store import NotifyStores, mongo_stores
from shared.contracts.customers import CustomerUpdated
from shared.contracts.erasures import ErasureEvent
from shared.contracts.incidents import Incident
from shared.contracts.messages import MessageReceived
from shared.contracts.sla import SlaEvent
from shared.contracts.tickets import TicketEvent
from shared.events import OutboundEvent, publish_all
from shared.service import ServiceApp
from shared.settings import NotifySettings
from shared.topics import (
    CUSTOMERS,
    DEADLETTER,
    ERASURES,
    INCIDENTS,
    MESSAGES,
    NOTIFICATIONS,
    SLA,
    TICKETS,
)
from shared.wiring import Given, Wiring


def build_app(
    settings: NotifySettings | None = None,
    given: Given | None = None,
    *,
    stores: NotifyStores | None = None,
    http_client: httpx.AsyncClient | None = None,
    start_sender: bool = True,
) -> ServiceApp:
    settings = settings or NotifySettings()
    wiring = Wiring("notify", settings, given)
    retention_s = settings.notify_retention_days * 86400.0
    policy = load_policy(settings.policy_dir / "notify.yaml").estimate
    stores = stores or mongo_stores(wiring.db, retention_s, keep=policy.samples)
    wiring.indexes(stores)
    metrics = NotifyMetrics.create(wiring.registry)
    templates = load_templates(settings.policy_dir / "templates.yaml")
    # What this process records it also sends (no claim write); without a sender, its
    # notifications wait `pending` for another replica's sweeper.
    held = Held(lease_s=settings.notify_claim_lease_s)
    notifier = Notifier(
        stores=stores,
        templates=templates,
        policy=policy,
        metrics=metrics,
        retention_s=retention_s,
        sla_wait_s=settings.notify_ack_sla_wait_s,
        held=held if start_sender else None,
    )
    client = http_client or httpx.AsyncClient(timeout=settings.notify_webhook_timeout_s)
    wiring.shutdown.append(client.aclose)

    async def publish(events: Sequence[OutboundEvent]) -> int:
        return await publish_all(wiring.broker, events)

    delivery = Delivery(
        stores=stores,
        transports=make_transports(settings, client),
        publish=publish,
        announce=announce,
        metrics=metrics,
        config=delivery_config(settings),
        sweep=notifier.sweep,
        held=held,
    )
    wiring.consume(
        "on_inputs",
        MESSAGES,
        CUSTOMERS,
        TICKETS,
        SLA,
        INCIDENTS,
        group_id="omniroute-notify",
        payload=MessageReceived | CustomerUpdated | TicketEvent | SlaEvent | Incident,
        description="Messages (routes and customer facts), customers (notify's copy; a"
        " tombstone deletes it), ticket changes, SLA deadlines and breaches, and incidents"
        " that customers are told about",
        # Notifications are stored (the outbox) before the offsets commit; then sent.
        handle=notifier.process,
        then=delivery.wake,
    )
    eraser = NotifyErasure(wiring.db)
    wiring.retention(eraser.sweeps)
    wiring.consume(
        "on_erasure",
        ERASURES,
        group_id="omniroute-notify-erasures",
        payload=ErasureEvent,
        description="Erasure requests (notify erases its notifications, routes and contact"
        " facts of the customer) and legal holds (its retention skips held customers)",
        handle=lambda batch: eraser.process(batch, datetime.now(UTC)),
    )
    if start_sender:

        async def start_sending() -> None:
            delivery.start()

        wiring.after_startup.append(start_sending)
        wiring.shutdown.append(delivery.stop)
        wiring.checks["sender"] = delivery.check
    routes = make_routes(
        settings, wiring.broker, stores.incidents, templates, access=wiring.access()
    )
    # Notifications and dead letters; the API's incidents; erasure completions.
    return wiring.app(routes, sends=(NOTIFICATIONS, DEADLETTER, INCIDENTS, ERASURES))
