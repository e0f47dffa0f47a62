"""The erasure edge every service shares: `support.erasures` in, `completed` out.

    decoded = decoder.decode(batch, now)
    events = await erase_batch(decoded, now, service="notify", erase=eraser.erase, holds=holds)
    await publish_all(broker, events)

Holds are applied first (so a hold and an erasure in one batch meet in order of
arrival), then each request is erased by the service's own `erase(request, now)`, which
returns the records it erased or anonymised per collection and must be idempotent (a
redelivered request erases nothing more). A customer the service knows as held is
skipped and reported `held`. `completed` events of other services are not a worker's
business and pass by (ingest reads them for the erasure log).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import BaseModel

from shared.consume import Contracts, Decoded
from shared.contracts.erasures import (
    ERASURE_COMPLETED,
    ERASURE_REQUESTED,
    LEGAL_HOLD_CHANGED,
    ErasureCompleted,
    ErasureRequested,
    LegalHoldChanged,
)
from shared.events import OutboundEvent, make_event
from shared.holds import Holds, MemoryHolds, MongoHolds
from shared.ids import event_id
from shared.mongo import Database
from shared.topics import ERASURES

log = logging.getLogger(__name__)

ERASURE_INPUTS = Contracts(
    {
        ERASURE_REQUESTED: ErasureRequested,
        ERASURE_COMPLETED: ErasureCompleted,
        LEGAL_HOLD_CHANGED: LegalHoldChanged,
    }
)

# erase(request, now) -> records erased or anonymised, per collection
Erase = Callable[[ErasureRequested, datetime], Awaitable[dict[str, int]]]


def requested_event(req: ErasureRequested) -> OutboundEvent:
    return make_event(
        req,
        topic=ERASURES,
        event_type=ERASURE_REQUESTED,
        event_id=event_id("erasure-requested", req.erasure_id),
        source="omniroute/ingest",
        key=req.customer_id,
        time=req.at,
        subject=req.erasure_id,
    )


def completed_event(done: ErasureCompleted) -> OutboundEvent:
    return make_event(
        done,
        topic=ERASURES,
        event_type=ERASURE_COMPLETED,
        # One per (erasure, service): a repeated erasure publishes the same id.
        event_id=event_id("erasure-completed", done.erasure_id, done.service),
        source=f"omniroute/{done.service}",
        key=done.erasure_id,
        time=done.at,
        subject=done.erasure_id,
    )


def hold_event(change: LegalHoldChanged) -> OutboundEvent:
    return make_event(
        change,
        topic=ERASURES,
        event_type=LEGAL_HOLD_CHANGED,
        event_id=event_id("legal-hold", change.customer_id, str(change.version)),
        source="omniroute/ingest",
        key=change.customer_id,
        time=change.at,
        subject=change.customer_id,
    )


def completed(
    service: str, req: ErasureRequested, counts: dict[str, int], now: datetime, held: bool = False
) -> OutboundEvent:
    # Ids and counts only: the customer is not named in logs.
    log.info(
        "erasure done" if not held else "erasure skipped: legal hold",
        extra={"erasure_id": req.erasure_id, "counts": counts, "held": held},
    )
    return completed_event(
        ErasureCompleted(
            erasure_id=req.erasure_id, service=service, counts=counts, held=held, at=now
        )
    )


async def erase_batch(
    batch: Decoded,
    now: datetime,
    *,
    service: str,
    erase: Erase,
    holds: Holds,
) -> list[OutboundEvent]:
    """Dead letters, then one `completed` per erasure request in the batch."""
    out = list(batch.dead)
    await holds.apply([i.event for i in batch.events if isinstance(i.event, LegalHoldChanged)])
    requests = [i.event for i in batch.events if isinstance(i.event, ErasureRequested)]
    held = await holds.held(r.customer_id for r in requests) if requests else set()
    for req in requests:
        if req.customer_id in held:
            out.append(completed(service, req, {}, now, held=True))
            continue
        out.append(completed(service, req, await erase(req, now), now))
    return out


@dataclass
class ErasureInbox:
    """What an engine read on support.erasures during one batch, applied at the batch's end
    (where the engine may do I/O): holds first, then the requests."""

    holds: Holds
    _requests: list[ErasureRequested] = field(default_factory=list)
    _changes: list[LegalHoldChanged] = field(default_factory=list)

    def note(self, ev: BaseModel) -> None:
        """Read in order with the batch; other services' completions pass by."""
        if isinstance(ev, ErasureRequested):
            self._requests.append(ev)
        elif isinstance(ev, LegalHoldChanged):
            self._changes.append(ev)

    async def take(self) -> tuple[list[ErasureRequested], set[str]]:
        """The batch's requests, and which of their customers are held."""
        requests, self._requests = self._requests, []
        changes, self._changes = self._changes, []
        await self.holds.apply(changes)
        if not requests:
            return [], set()
        return requests, await self.holds.held(r.customer_id for r in requests)


@dataclass
class EngineErasure:
    """An engine's part of erasure: its own copy of the legal holds (in its database, or in
    memory for tests) and the inbox of the batch being applied."""

    db: Database | None = None  # None: in-memory tests, nothing stored beyond the engine's
    holds: Holds = field(default_factory=MemoryHolds)
    inbox: ErasureInbox = field(init=False)

    def __post_init__(self) -> None:
        if self.db is not None:
            self.holds = MongoHolds(self.db)
        self.inbox = ErasureInbox(self.holds)
