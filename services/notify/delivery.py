"""The sender: the notifications this process holds, to the customer, at least once.

The consumer that records a notification inserts it claimed by this process and hands it
over (`Held`), so sending needs no claim write. One pass: what is due among the held ones
(and, every `sweep_interval_s`, what no live process holds any more: store/outbox.py);
those whose conversation route is not known yet wait (ingest's `support.messages` and the
router's `support.tickets` are consumed independently, so a ticket event can come first);
the rate limit and merging decide which go now (outbox.py); then rounds of at most
`concurrency` sends, each round's announcements published and then its outcomes (sent,
retry after a backoff, dead after the last attempt or a refusal, deferred, merged) written
as one statement. A SIGKILL between a send and its round's write repeats at most one
round's sends, with the same idempotency keys and event ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
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


@dataclass
class Held:
    """The notifications this process has claimed, by id: what its sender will send.

    The consumer inserts new notifications through `claim` and hands them over with
    `take`; the sender works on them and keeps the ones that wait (retry, route, rate).
    """

    owner: str = field(default_factory=lambda: f"notify-{uuid.uuid4().hex[:12]}")
    lease_s: float = 30.0
    claim_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    items: dict[str, Notification] = field(default_factory=dict)
    busy: set[str] = field(default_factory=set)  # in the sender's current pass
    # A round's outcomes not announced / not written yet (Kafka or MongoDB failed).
    unpublished: list[OutboundEvent] = field(default_factory=list)
    unwritten: list[Notification] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def claim(self, n: Notification, now: datetime) -> Notification:
        """`n` as inserted already held by this process."""
        lease = max(now, n.next_at) + timedelta(seconds=self.lease_s)
        return replace(n, status="sending", owner=self.owner, claim_id=self.claim_id, due_at=lease)

    def take(self, notifications: Iterable[Notification]) -> None:
        for n in notifications:
            self.items[n.notification_id] = n
        self.wake.set()

    def withdraw(self, ids: Iterable[str]) -> set[str]:
        """Stop holding these (they are being merged), unless a send of theirs is under way."""
        out = {i for i in ids if i in self.items and i not in self.busy}
        for i in out:
            del self.items[i]
        return out

    def due(self, now: datetime, limit: int) -> list[Notification]:
        ready = sorted(
            (n for n in self.items.values() if n.next_at <= now),
            key=lambda n: (not n.urgent, n.next_at),
        )
        return ready[:limit]


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
class Round:
    """What a round did: the notifications' new states and the events to publish first."""

    changed: list[Notification] = field(default_factory=list)
    events: list[OutboundEvent] = field(default_factory=list)


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
    # Shared with the notifier that records (app.py; its lease_s rules); by default one of
    # its own with config.lease_s.
    held: Held | None = None
    _task: asyncio.Task[None] | None = None
    # The notifier's time-driven decisions (acknowledgements sla never answered, wrong
    # estimates), run by the same loop; what they record is delivered by it.
    sweep: Sweep | None = None
    _observed_at: float = 0.0
    _swept_at: float = 0.0
    _taken_at: float = -1e9
    _renewed_at: float = -1e9

    def __post_init__(self) -> None:
        if self.held is None:
            self.held = Held(owner=self.owner, lease_s=self.config.lease_s)
        self.owner = self.held.owner

    @property
    def _held(self) -> Held:
        assert self.held is not None
        return self.held

    # -- one pass --------------------------------------------------------------------

    async def run_once(self) -> int:
        """Act on what is due now; the number of notifications looked at."""
        held = self._held
        await self._flush()
        now = self.clock()
        if time.monotonic() - self._taken_at >= self.config.sweep_interval_s:
            self._taken_at = time.monotonic()
            await self._take_over(now)
        await self._renew(now)
        due = held.due(now, self.config.batch_size)
        if not due:
            return 0
        held.busy = {n.notification_id for n in due}
        try:
            await self._pass(due, now)
        finally:
            held.busy = set()
        return len(due)

    async def _pass(self, due: list[Notification], now: datetime) -> None:
        routes = await self.stores.conversations.routes(
            n.conversation_id for n in due if n.conversation_id
        )
        first = Round()
        ready: list[Notification] = []
        for n in due:
            if n.conversation_id in routes:
                ready.append(n)
            elif (now - n.created_at).total_seconds() < self.config.route_wait_s:
                delay = backoff_s(n.waits + 1, ROUTE_WAIT_BASE_S, ROUTE_WAIT_MAX_S)
                first.changed.append(
                    self._defer(n, now + timedelta(seconds=delay), "route unknown")
                )
            else:
                first.changed.append(self._give_up(n, "no route for conversation", now, first))
        recent = await self.stores.outbox.sent_times(
            (n.customer_id for n in ready),
            now - timedelta(seconds=self.config.rate.window_s),
        )
        plan = plan_sends([self._candidate(d) for d in ready], recent, now, self.config.rate)
        by_id = {n.notification_id: n for n in ready}
        for nid, into in plan.merged.items():
            first.changed.append(
                replace(by_id[nid], status="merged", merged_into=into, due_at=None)
            )
            self._count(by_id[nid], "merged")
        for nid, at in plan.delay.items():
            first.changed.append(self._defer(by_id[nid], at, "rate limited"))
            self._count(by_id[nid], "delayed")
        sends = [by_id[nid] for nid in plan.send]
        step = self.config.concurrency
        for start in range(0, max(1, len(sends)), step):
            round_ = first if start == 0 else Round()
            if start:
                await self._renew(self.clock())
            outcomes = await asyncio.gather(
                *(
                    self._deliver(n, routes[n.conversation_id or ""])
                    for n in sends[start : start + step]
                )
            )
            for changed, events in outcomes:
                round_.changed.append(changed)
                round_.events += events
            await self._finish(round_)

    async def _finish(self, round_: Round) -> None:
        """What a round did is done in memory at once (nothing is sent twice because Kafka
        or MongoDB failed after the send); announced, then written, by `_flush`."""
        held = self._held
        for n in round_.changed:
            if n.status == "sending":
                held.items[n.notification_id] = n  # waits for its next try
            else:
                held.items.pop(n.notification_id, None)
        held.unpublished += round_.events
        held.unwritten += round_.changed
        await self._flush()

    async def _flush(self) -> None:
        """Announce first, then write: a crash in between repeats the same event ids. What
        fails stays for the next pass."""
        held = self._held
        if held.unpublished:
            await self.publish(held.unpublished)
            held.unpublished = []
        if not held.unwritten:
            return
        changed = held.unwritten
        matched = await self.stores.outbox.write(changed, held.claim_id)
        held.unwritten = []
        if matched < len(changed):
            # Another replica took some over (this one stalled past its lease): it sends them.
            still = await self.stores.outbox.held(
                {n.notification_id for n in changed}, held.claim_id
            )
            log.warning("lease lost", extra={"notifications": len(changed) - matched})
            for n in changed:
                if n.notification_id not in still:
                    held.items.pop(n.notification_id, None)

    def _lease_until(self, at: datetime) -> datetime:
        return max(at, self.clock()) + timedelta(seconds=self._held.lease_s)

    def _defer(self, n: Notification, at: datetime, reason: str) -> Notification:
        return replace(
            n, next_at=at, due_at=self._lease_until(at), last_error=reason, waits=n.waits + 1
        )

    async def _take_over(self, now: datetime) -> None:
        held = self._held
        taken = await self.stores.outbox.take_over(
            now, held.owner, held.claim_id, self._lease_until(now), self.config.batch_size
        )
        if taken:
            log.info("notifications taken over", extra={"notifications": len(taken)})
            held.take(taken)

    async def _renew(self, now: datetime) -> None:
        """Extend the lease of what is held before it runs out (at most every lease_s/4)."""
        if time.monotonic() - self._renewed_at < self._held.lease_s / 4:
            return
        self._renewed_at = time.monotonic()
        held = self._held
        soon = now + timedelta(seconds=held.lease_s / 2)
        ids = {nid for nid, n in held.items.items() if n.due_at is not None and n.due_at < soon}
        if not ids:
            return
        lease = self._lease_until(now)
        if await self.stores.outbox.renew(ids, held.claim_id, lease) < len(ids):
            lost = ids - await self.stores.outbox.held(ids, held.claim_id)
            log.warning("lease lost", extra={"notifications": len(lost)})
            for nid in lost:
                held.items.pop(nid, None)
            ids -= lost
        for nid in ids:
            held.items[nid] = replace(held.items[nid], due_at=lease)

    def _candidate(self, n: Notification) -> Candidate:
        return Candidate(
            notification_id=n.notification_id,
            customer_id=n.customer_id,
            ticket_id=n.ticket_id,
            template=n.template,
            created_at=n.created_at,
            urgent=n.urgent,
        )

    async def _deliver(
        self, doc: Notification, route: Route
    ) -> tuple[Notification, list[OutboundEvent]]:
        """One try: the notification's new state and what to announce."""
        doc = replace(doc, attempts=doc.attempts + 1)
        done = Round()
        transport = self.transports.for_route(route)
        if transport is None:
            reason = f"no transport for {route.channel}/{route.provider}"
            return self._give_up(doc, reason, self.clock(), done), done.events
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
            return self._failed(doc, exc.reason, exc.permanent, done), done.events
        except Exception as exc:  # a transport bug must not stop the loop: retry it
            log.exception("transport error", extra={"notification_id": doc.notification_id})
            return self._failed(doc, f"transport {type(exc).__name__}", False, done), done.events
        finally:
            self.metrics.send_duration.labels(doc.channel).observe(time.monotonic() - started)
        now = self.clock()
        self._count(doc, "sent")
        self.metrics.send_latency.labels(doc.channel).observe(
            max(0.0, (now - doc.created_at).total_seconds())
        )
        log.info(
            "notification sent",
            extra={"notification_id": doc.notification_id, "ticket_id": doc.ticket_id},
        )
        sent = replace(doc, status="sent", sent_at=now, due_at=None)
        return sent, [self.announce(announcement(doc, "sent", now), "sent")]

    def _failed(self, doc: Notification, reason: str, permanent: bool, done: Round) -> Notification:
        attempt = doc.attempts
        if permanent or attempt >= self.config.max_attempts:
            why = "refused" if permanent else f"failed after {attempt} attempts"
            return self._give_up(doc, f"delivery {why}: {reason}", self.clock(), done)
        now = self.clock()
        nid = doc.notification_id
        at = now + timedelta(
            seconds=backoff_s(attempt, self.config.retry_base_s, self.config.retry_max_s, nid)
        )
        self._count(doc, "failed")
        log.info(
            "notification attempt failed",
            extra={"notification_id": nid, "attempt": attempt, "reason": reason},
        )
        done.events.append(self.announce(announcement(doc, "failed", now, reason), "failed"))
        return replace(doc, next_at=at, due_at=self._lease_until(at), last_error=reason)

    def _give_up(self, doc: Notification, reason: str, now: datetime, done: Round) -> Notification:
        """A dead letter and the `dead` event, published before the mark is written."""
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
        done.events += [letter, self.announce(announcement(doc, "dead", now, reason), "dead")]
        self._count(doc, "dead")
        self.metrics.deadletters.labels("notification undeliverable").inc()
        log.warning(
            "notification dead", extra={"notification_id": doc.notification_id, "reason": reason}
        )
        return replace(doc, status="dead", last_error=reason, due_at=None)

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
        self._held.wake.set()

    async def run(self) -> None:
        wake = self._held.wake
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
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.config.poll_interval_s)

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
