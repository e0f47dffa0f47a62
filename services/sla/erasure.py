"""The sla engine's part of erasure and retention.

An erasure goes through the engine's own step: the engine notes each request as it reads
its batch, then `finish` anonymises the customer's timers in memory and adds them to the
step, which the journal stores (with the `completed` event) before anything is published
or committed. Timers no longer in memory (finished before the dedupe window) are
anonymised in `sla_timers` directly. A timer keeps what SLA history needs: ticket,
metric, priority, channel, category, agent, times, warned and breached.

A new lease holder's recovery looks up only support.sla and support.deadletter for what
was already published: a journaled `completed` may go out twice, which ingest's erasure
log takes once (the first report per service counts).

Retention (policy/retention.yaml), held customers skipped, on the lease holder only:
finished timers after `sla_timers`, the API audit after `audit`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pydantic import BaseModel

from services.sla.deadlines import SlaState, Timer
from shared.erasure import EngineErasure, completed
from shared.events import OutboundEvent
from shared.retention import RetentionPolicy, Sweep, remove_expired

ERASED = "erased"  # the customer of an anonymised timer


class StepLike(Protocol):
    def add(self, ticket_id: str, timers: list[Timer], events: list[OutboundEvent]) -> None: ...


def erase_customer(state: SlaState, customer_id: str) -> list[Timer]:
    """Anonymise the customer's timers in memory; the changed ones, to be journaled."""
    changed = [t for t in state.timers.values() if t.customer_id == customer_id]
    for t in changed:
        t.customer_id = ERASED
    return changed


@dataclass
class SlaErasure(EngineErasure):
    def note(self, ev: BaseModel) -> None:
        self.inbox.note(ev)

    async def finish(self, state: SlaState, step: StepLike, now: datetime) -> list[OutboundEvent]:
        """Anonymise into `step`; returns the `completed` events for the step to journal."""
        requests, held = await self.inbox.take()
        done: list[OutboundEvent] = []
        for req in requests:
            if req.customer_id in held:
                done.append(completed("sla", req, {}, now, held=True))
                continue
            timers = erase_customer(state, req.customer_id)
            for t in timers:
                step.add(t.ticket_id, [t], [])
            stored = 0
            if self.db is not None:
                result = await self.db["sla_timers"].update_many(
                    {
                        "customer_id": req.customer_id,
                        "_id": {"$nin": sorted(t.timer_id for t in timers)},
                    },
                    {"$set": {"customer_id": ERASED}},
                )
                stored = result.modified_count
            done.append(completed("sla", req, {"sla_timers": len(timers) + stored}, now))
        return done

    def sweeps(self, policy: RetentionPolicy) -> list[Sweep]:
        db = self.db
        assert db is not None

        async def timers(now: datetime, limit: int) -> int:
            query = {
                "state": {"$nin": ["running", "paused"]},
                "finished_at": {"$lt": policy.cutoff("sla_timers", now)},
            }
            held = await self.holds.held()
            return await remove_expired(db["sla_timers"], query, limit, held=held)

        async def audit(now: datetime, limit: int) -> int:
            query = {"at": {"$lt": policy.cutoff("audit", now)}}
            return await remove_expired(db["api_audit"], query, limit)

        return [Sweep("sla_timers", timers), Sweep("api_audit", audit)]
