"""Router's engine: a batch of messages / agent / SLA events in, or the clock's tick; the
step journaled (shared/journal.py), its ticket events published, then its documents folded
into the router's collections. One lock: ticks and batches never interleave, so every
decision sees one consistent state.

Between a step's publish and its fold the topic is ahead of the collections: the API on
this replica reads the journaled documents meanwhile (`journaled`, services/router/reads.py).
An agent action this replica's API published is applied at once when it is next in its
partition (`apply_ahead`), instead of waiting for the input consumer's next fetch; the
consumer then finds it applied.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from services.router.erasure import RouterErasure
from services.router.handlers import INPUTS, ticket_event
from services.router.metrics import RouterMetrics
from services.router.state import RouterState
from services.router.state.model import Changes
from services.router.store import AGENTS, META, RouterStore, agent_doc, changes_of
from shared.consume import Decoder, Incoming, kind_of
from shared.contracts.agents import (
    AgentActionTaken,
    AgentEvent,
    AgentPresenceChanged,
    AgentProfileUpdated,
)
from shared.contracts.messages import MessageReceived
from shared.contracts.sla import SlaEvent
from shared.events import OutboundEvent
from shared.journal import (
    Compactor,
    Entry,
    Journal,
    Marks,
    NoPublishedLog,
    Output,
    PublishedLog,
    advance,
    latest,
    republish,
)
from shared.lease import EngineLease
from shared.mongo import Document
from shared.topics import AGENTS as AGENTS_TOPIC

log = logging.getLogger(__name__)


@dataclass
class RouterEngine:
    """Applies inputs to the in-memory state and makes the effects durable."""

    state: RouterState
    store: RouterStore
    journal: Journal
    output: Output
    metrics: RouterMetrics
    published: PublishedLog = field(default_factory=NoPublishedLog)
    lease: EngineLease | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    loaded: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    marks: Marks = field(default_factory=dict)  # where the next events land
    _batch_agent_events: list[str] = field(default_factory=list)
    _reload: bool = False
    _step_started: float = 0.0  # perf_counter at the start of the step being committed
    erasure: RouterErasure = field(default_factory=RouterErasure)
    # (collection, _id) -> the newest journaled version not folded yet (the API reads it).
    unfolded: dict[tuple[str, Any], Document] = field(default_factory=dict)
    # (topic, partition) of support.agents -> the offset after the last record applied.
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.decoder = Decoder(
            "router", INPUTS, on_dead=lambda _reason: self.metrics.deadletters.inc()
        )
        # Steps are folded right after they are published; the compactor forgets them in bulk.
        # (Folding in the background instead, between steps, was measured: the surge of
        # 3,000 routed ~10 % later, many small writes instead of one per step, and the P1
        # figure no better: docs/benchmarks.md.)
        self.compactor = Compactor(
            None,
            self.journal,
            may_write=lambda: self.lease is None or self.lease.valid(),
            interval_s=0.2,
        )

    async def load(self) -> None:
        """(Re)build the state from MongoDB: at start and on every lease takeover."""
        self.loaded = False
        self.unfolded.clear()  # _recover folds what the journal holds
        self.next_offsets.clear()
        await self.compactor.stop()
        self.state = RouterState(policy=self.state.policy)
        await self._recover()
        await self.store.load(self.state, self.clock() - timedelta(days=8))
        fixed = self.state.reconcile_loads()
        changes = {META: [{"_id": "router", "position": self.state.position}]}
        if fixed:
            # Loads follow the tickets (e.g. documents written before transactions were used).
            log.warning("agent loads corrected", extra={"agents": sorted(fixed)})
            changes[AGENTS] = [agent_doc(a) for a in fixed.values()]
        await self.store.fold(changes)  # and the position's floor moves up
        self.compactor.start()
        self.marks = await self.published.end_offsets()
        self.loaded = True
        self.metrics.observe_state(self.state, self.clock())

    async def _recover(self) -> None:
        """Finish what a crashed holder journaled: fold its documents again (idempotent) and
        publish the events the output topics lack."""
        pending = await self.journal.pending()
        if pending:
            await self.store.fold(latest(pending))
            await republish(pending, self.journal, self.published, self.output)
            await self.journal.discard(pending)

    def _apply(self, item: Incoming, now: datetime) -> Changes | OutboundEvent:
        """One decoded input applied to the state, or its dead letter.

        A decision that raises may have changed memory halfway, so the state is reloaded
        after the batch is stored.
        """
        ev = item.event
        if isinstance(ev, AgentEvent) and item.ce_id not in self.state.applied_agent_events:
            # Recorded as applied once: a second record of it (applied ahead, redelivered)
            # must not overwrite the stored outcome of an action.
            self._batch_agent_events.append(item.ce_id)
        try:
            if isinstance(ev, MessageReceived):
                return self.state.on_message(ev, now, defer=True)
            if isinstance(ev, AgentProfileUpdated):
                return self.state.on_profile(ev, item.ce_id, now)
            if isinstance(ev, AgentPresenceChanged):
                return self.state.on_presence(ev, item.ce_id, now)
            if isinstance(ev, AgentActionTaken):
                return self.state.on_action(ev, item.ce_id, now)
            if not isinstance(ev, SlaEvent):  # erasures and holds: applied at the batch's end
                return self.erasure.note(ev)
            return self.state.on_sla(ev, now)
        except Exception as exc:
            log.exception("decision failed", extra={"ce_type": item.ce_type, "ce_id": item.ce_id})
            self._reload = True
            reason = f"unprocessable {kind_of(item.ce_type)} event"
            return self.decoder.dead(reason, item.record, now, type(exc).__name__)

    async def process(self, records: Sequence[Any]) -> int:
        waiting = time.perf_counter()
        async with self.lock:
            self.metrics.step_seconds.labels("lock_wait").observe(time.perf_counter() - waiting)
            if not self.loaded:
                await self.load()
            try:
                return await self._process(records)
            except BaseException:
                # The batch changed memory but maybe not MongoDB: the batch will be redelivered
                # (NACK) and must be applied to the stored state, not skipped as already seen.
                self.loaded = False
                raise

    async def _fold(self, changes: dict[str, list[Document]]) -> None:
        """A published step's documents into the collections, after which the API reads
        them there (a newer journaled version stays in `unfolded`)."""
        started = time.perf_counter()
        await self.store.fold(changes)
        for collection, docs in changes.items():
            for d in docs:
                if self.unfolded.get((collection, d["_id"])) is d:
                    del self.unfolded[(collection, d["_id"])]
        self.metrics.step_seconds.labels("fold").observe(time.perf_counter() - started)

    def serving(self) -> bool:
        """This replica is the engine: its state is loaded and it holds the lease."""
        return self.loaded and (self.lease is None or self.lease.valid())

    def journaled(self, collection: str, doc_id: Any) -> Document | None:
        """The document as this engine's journal holds it, when it is not folded yet."""
        return self.unfolded.get((collection, doc_id)) if self.serving() else None

    def journaled_in(self, collection: str) -> list[Document]:
        """Every journaled, not yet folded document of `collection`."""
        if not self.serving():
            return []
        return [d for (c, _), d in list(self.unfolded.items()) if c == collection]

    def ticket_holder(self, ticket_id: str) -> tuple[str, str | None] | None:
        """(state, agent) of the ticket in the engine's memory; None when this replica is
        not the engine or does not hold the ticket (old resolved work): ask the store."""
        t = self.state.tickets.get(ticket_id) if self.serving() else None
        return (t.state, t.agent_id) if t is not None else None

    async def apply_ahead(self, record: Any) -> bool:
        """Apply an agent event this replica just published (acknowledged by Kafka), ahead
        of the input consumer, if this replica is the engine and every earlier record of its
        partition is applied (order per agent holds). Returns whether it did; if not, the
        consumer applies it as usual, and if so the consumer finds it applied (by event id).
        Commits no offsets, like the look-ahead."""
        key = (record.topic, record.partition)
        if not self.serving() or self.next_offsets.get(key) != record.offset:
            return False
        waiting = time.perf_counter()
        async with self.lock:
            self.metrics.step_seconds.labels("lock_wait").observe(time.perf_counter() - waiting)
            if not self.serving() or self.next_offsets.get(key) != record.offset:
                return False
            try:
                await self._process([record])
            except BaseException:
                self.loaded = False  # as in process(): reload before the next step
                raise
            return True

    def due(self) -> bool:
        """Whether the clock has something to fire (cheap: the top of the timer heap)."""
        at = self.state.next_due()
        return self.loaded and at is not None and at <= self.clock()

    async def tick(self) -> int:
        """Fire due offers and requeues through the same path as inputs: journal, publish, fold.

        Event ids are the ticket's (id, sequence): a tick repeated after a crash before the
        store decides again from the stored state and publishes the same ids.
        """
        async with self.lock:
            if not self.loaded:
                await self.load()
            try:
                self._step_started = time.perf_counter()
                now = self.clock()
                changes = self.state.tick(now)
                if not changes:
                    return 0
                return await self._commit(changes, [], now)
            except BaseException:
                self.loaded = False  # fired in memory only: reload and fire again
                raise

    async def run_clock(self, may_act: Callable[[], bool], interval_s: float) -> None:
        """Fire due offers and requeues; only while `may_act` (the lease holder)."""
        while True:
            if may_act() and self.due():
                try:
                    await self.tick()
                except Exception:
                    log.exception("router clock tick failed")
                    await asyncio.sleep(1.0)
            await asyncio.sleep(interval_s)

    async def _process(self, records: Sequence[Any]) -> int:
        self._step_started = time.perf_counter()
        now = self.clock()
        changes = Changes()
        extra: list[OutboundEvent] = []
        self._batch_agent_events = []
        self._reload = False
        batch = self.decoder.decode(records, now)
        extra += batch.dead
        for item in batch.events:
            result = self._apply(item, now)
            if isinstance(result, OutboundEvent):
                extra.append(result)
            else:
                changes.merge(result)
        changes.merge(self.state.route_deferred(now))
        erased, done = await self.erasure.finish(self.state, now)
        changes.merge(erased)
        count = await self._commit(changes, extra + done, now)
        if self._reload:
            self.loaded = False  # what the failed decision left in memory is not stored
        for r in records:
            if getattr(r, "topic", None) == AGENTS_TOPIC:
                key = (r.topic, r.partition)
                self.next_offsets[key] = max(self.next_offsets.get(key, 0), r.offset + 1)
        return count

    async def _commit(self, changes: Changes, extra: list[OutboundEvent], now: datetime) -> int:
        events = [ticket_event(e) for e in changes.events] + extra
        if self.lease is not None:
            self.lease.check()  # a replica that lost its lease must not write
        entry = Entry(
            self.journal.next_id(),
            changes_of(
                changes.tickets.values(),
                changes.agents.values(),
                self._batch_agent_events,
                changes.outcomes,
            ),
            events,
            dict(self.marks),
        )
        self._batch_agent_events = []
        if entry.changes or events:
            # Journal, publish, fold, forget. The events leave as soon as the step is
            # durable; until the fold the API reads the documents from `unfolded`, and the
            # entry stays in the journal until folded (a crash in between: _recover folds).
            phase = self.metrics.step_seconds
            started = time.perf_counter()
            phase.labels("decide").observe(started - self._step_started)
            await self.journal.append(entry)
            journaled = time.perf_counter()
            phase.labels("journal").observe(journaled - started)
            for collection, docs in entry.changes.items():
                self.unfolded.update(((collection, d["_id"]), d) for d in docs)
            advance(self.marks, await asyncio.gather(*await self.output.send(events)))
            phase.labels("publish").observe(time.perf_counter() - journaled)
            await self._fold(entry.changes)
            self.compactor.offer(entry)
            self.compactor.mark_published(entry.entry_id)
        self.metrics.observe(changes, self.state, now)
        return len(events)
