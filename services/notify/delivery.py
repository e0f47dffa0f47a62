"""The sender loop: due notifications out of the outbox, to the customer, at least once.

One pass: read due notifications; those whose conversation route is not known yet wait
(ingest's `support.messages` and the router's `support.tickets` are consumed
independently, so a ticket event can come first); the rate limit and merging decide
which go now (outbox.py); each one sent is claimed first (store.py: compare-and-set with
an owner and a lease), then marked sent, or released for a retry after a backoff, or —
after the last attempt or a permanent refusal — marked dead with a dead letter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from services.notify.metrics import NotifyMetrics
from services.notify.outbox import Candidate, RateRule, backoff_s, plan_sends
from services.notify.route import Route
from services.notify.senders import DeliveryError, Outgoing, Transports
from services.notify.store import NotifyStores
from services.notify.store.outbox import Notification
from shared.contracts.notifications import NotificationRecorded, NotificationStatus
from shared.deadletter import dead_letter
from shared.events import OutboundEvent

log = logging.getLogger(__name__)
Publish = Callable[[Sequence[OutboundEvent]], Awaitable[int]]
ROUTE_WAIT_BASE_S = 0.25
ROUTE_WAIT_MAX_S = 30.0


@dataclass(frozen=True)
class DeliveryConfig:
    retry_base_s: float = 2.0
    retry_max_s: float = 300.0
    max_attempts: int = 6
    lease_s: float = 30.0
    batch_size: int = 1000
    concurrency: int = 16
    route_wait_s: float = 3600.0
    rate: RateRule = field(default_factory=lambda: RateRule(3, 60.0))
    poll_interval_s: float = 0.2
    metrics_interval_s: float = 5.0
    sweep_interval_s: float = 1.0


def announcement(
    n: Notification, status: NotificationStatus, now: datetime, reason: str | None = None
) -> NotificationRecorded:
    return NotificationRecorded(
        notification_id=n.notification_id,
        ticket_id=n.ticket_id,
        customer_id=n.customer_id,
        channel=n.channel,  # type: ignore[arg-type]
        template=n.template,
        language=n.language,
        status=status,
        cause_event_id=n.cause_event_id or "",
        at=now,
        cause=n.cause,
        attempts=n.attempts,
        reason=reason,
        incident_id=n.incident_id,
    )


Announce = Callable[[NotificationRecorded, NotificationStatus], OutboundEvent]
Sweep = Callable[[], Awaitable[list[OutboundEvent]]]


@dataclass
class Delivery:
    stores: NotifyStores
    transports: Transports
    publish: Publish
    announce: Announce
    metrics: NotifyMetrics
    config: DeliveryConfig = DeliveryConfig()
    owner: str = field(default_factory=lambda: f"notify-{uuid.uuid4().hex[:12]}")
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    # The notifier's time-driven decisions (acknowledgements sla never answered, wrong
    # estimates), run by the same loop; what they record is delivered by it.
    sweep: Sweep | None = None
    _observed_at: float = 0.0
    _swept_at: float = 0.0

    # -- one pass --------------------------------------------------------------------

    async def run_once(self) -> int:
        """Act on what is due now; the number of notifications looked at."""
        now = self.clock()
        outbox = self.stores.outbox
        due = await outbox.due(now, self.config.batch_size)
        if not due:
            return 0
        routes = await self.stores.conversations.routes(
            n.conversation_id for n in due if n.conversation_id
        )
        ready: list[Notification] = []
        for n in due:
            if n.conversation_id in routes:
                ready.append(n)
            else:
                await self._wait_for_route(n, now)
        recent = await outbox.sent_times(
            (n.customer_id for n in ready),
            now - timedelta(seconds=self.config.rate.window_s),
        )
        plan = plan_sends([self._candidate(d) for d in ready], recent, now, self.config.rate)
        by_id = {n.notification_id: n for n in ready}
        for nid, into in plan.merged.items():
            if await outbox.mark_merged(by_id[nid], into):
                self._count(by_id[nid], "merged")
        for nid, at in plan.delay.items():
            if await outbox.defer(by_id[nid], at, "rate limited"):
                self._count(by_id[nid], "delayed")
        events: list[OutboundEvent] = []
        gate = asyncio.Semaphore(self.config.concurrency)

        async def one(n: Notification) -> None:
            async with gate:
                events.extend(await self._deliver(n, routes[n.conversation_id or ""]))

        await asyncio.gather(*(one(by_id[nid]) for nid in plan.send))
        if events:
            await self.publish(events)
        return len(due)

    def _candidate(self, n: Notification) -> Candidate:
        return Candidate(
            notification_id=n.notification_id,
            customer_id=n.customer_id,
            ticket_id=n.ticket_id,
            template=n.template,
            created_at=n.created_at,
            urgent=n.urgent,
        )

    async def _wait_for_route(self, n: Notification, now: datetime) -> None:
        waited = (now - n.created_at).total_seconds()
        if waited < self.config.route_wait_s:
            delay = backoff_s(n.waits + 1, ROUTE_WAIT_BASE_S, ROUTE_WAIT_MAX_S)
            await self.stores.outbox.defer(n, now + timedelta(seconds=delay), "route unknown")
            return
        claim_id = uuid.uuid4().hex
        if await self.stores.outbox.claim(n, self.owner, claim_id, self._lease_until()):
            await self._give_up(n, claim_id, "no route for conversation", now)

    def _lease_until(self) -> datetime:
        return self.clock() + timedelta(seconds=self.config.lease_s)

    async def _deliver(self, doc: Notification, route: Route) -> list[OutboundEvent]:
        claim_id = uuid.uuid4().hex
        if not await self.stores.outbox.claim(doc, self.owner, claim_id, self._lease_until()):
            return []  # another replica took it
        doc = replace(doc, attempts=doc.attempts + 1)
        transport = self.transports.for_route(route)
        if transport is None:
            await self._give_up(doc, claim_id, f"no transport for {route.channel}/{route.provider}")
            return []
        out = Outgoing(
            notification_id=doc.notification_id,
            ticket_id=doc.ticket_id,
            conversation_id=doc.conversation_id or "",
            channel=route.channel,
            template=doc.template,
            language=doc.language,
            subject=doc.subject or "",
            text=doc.text,
            at=self.clock(),
        )
        started = time.monotonic()
        try:
            await transport.send(out, route)
        except DeliveryError as exc:
            return await self._failed(doc, claim_id, exc.reason, exc.permanent)
        except Exception as exc:  # a transport bug must not stop the loop: retry it
            log.exception("transport error", extra={"notification_id": doc.notification_id})
            return await self._failed(doc, claim_id, f"transport {type(exc).__name__}", False)
        finally:
            self.metrics.send_duration.labels(doc.channel).observe(time.monotonic() - started)
        now = self.clock()
        if not await self.stores.outbox.mark_sent(doc.notification_id, claim_id, now):
            # Our lease ran out and another replica took over: it will send it again
            # with the same idempotency key.
            log.warning("lease lost after send", extra={"notification_id": doc.notification_id})
        self._count(doc, "sent")
        self.metrics.send_latency.labels(doc.channel).observe(
            max(0.0, (now - doc.created_at).total_seconds())
        )
        log.info(
            "notification sent",
            extra={"notification_id": doc.notification_id, "ticket_id": doc.ticket_id},
        )
        return [self.announce(announcement(doc, "sent", now), "sent")]

    async def _failed(
        self, doc: Notification, claim_id: str, reason: str, permanent: bool
    ) -> list[OutboundEvent]:
        attempt = doc.attempts
        if permanent or attempt >= self.config.max_attempts:
            why = "refused" if permanent else f"failed after {attempt} attempts"
            await self._give_up(doc, claim_id, f"delivery {why}: {reason}")
            return []
        now = self.clock()
        nid = doc.notification_id
        wait = backoff_s(attempt, self.config.retry_base_s, self.config.retry_max_s, nid)
        await self.stores.outbox.release(nid, claim_id, now + timedelta(seconds=wait), reason)
        self._count(doc, "failed")
        log.info(
            "notification attempt failed",
            extra={"notification_id": nid, "attempt": attempt, "reason": reason},
        )
        return [self.announce(announcement(doc, "failed", now, reason), "failed")]

    async def _give_up(
        self, doc: Notification, claim_id: str, reason: str, now: datetime | None = None
    ) -> None:
        """Dead letter and `dead` event first, then the mark: a crash in between repeats
        the same event ids, never loses them."""
        now = now or self.clock()
        safe = {
            "_id": doc.notification_id,
            "ticket_id": doc.ticket_id,
            "channel": doc.channel,
            "template": doc.template,
            "cause": doc.cause,
            "attempts": doc.attempts,
        }
        letter = dead_letter(
            service="notify",
            reason="notification undeliverable",
            detail=reason,
            payload=json.dumps(safe, default=str).encode(),
            now=now,
        )
        await self.publish([letter, self.announce(announcement(doc, "dead", now, reason), "dead")])
        await self.stores.outbox.mark_dead(doc.notification_id, claim_id, reason, now)
        self._count(doc, "dead")
        self.metrics.deadletters.labels("notification undeliverable").inc()
        log.warning(
            "notification dead",
            extra={"notification_id": doc.notification_id, "reason": reason},
        )

    def _count(self, n: Notification, outcome: str) -> None:
        self.metrics.notifications.labels(n.channel, n.template, outcome).inc()

    # -- gauges ----------------------------------------------------------------------

    async def observe(self) -> None:
        depth, oldest = await self.stores.outbox.stats(self.clock())
        self.metrics.outbox_depth.set(depth)
        self.metrics.outbox_oldest.set(oldest)
        self.metrics.observe_incidents(*await self.stores.incidents.stats())

    # -- the loop --------------------------------------------------------------------

    def wake(self) -> None:
        """New notifications were recorded in this process: look now."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                if self.sweep and time.monotonic() - self._swept_at >= self.config.sweep_interval_s:
                    self._swept_at = time.monotonic()
                    if recorded := await self.sweep():
                        await self.publish(recorded)
                busy = await self.run_once()
                if time.monotonic() - self._observed_at >= self.config.metrics_interval_s:
                    self._observed_at = time.monotonic()
                    await self.observe()
            except Exception:  # keep the loop alive; what failed is due again
                log.exception("sender pass failed")
                busy = 0
                await asyncio.sleep(1.0)
            if not busy:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.config.poll_interval_s)

    async def check(self) -> None:
        """Readiness: the sender loop is running."""
        if self._task is None or self._task.done():
            raise RuntimeError("sender loop not running")

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="notify-sender")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
