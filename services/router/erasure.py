"""The router's part of erasure and retention.

An erasure goes through the engine's own step, so memory and MongoDB agree: the engine
notes each request as it reads its batch, then `finish` turns the customer's tickets into
anonymous shells in memory (no customer, no conversations: a later message from the same
address opens a new ticket) and hands them back as the batch's changes, which the engine
stores with everything else before it commits the offsets. Tickets not in memory (resolved
long ago) are anonymised in `tickets` directly. A shell keeps what metrics and SLA history
need: category, priority, channel, language, state, times, agent and decision record.

A new lease holder's recovery reads back only support.tickets and support.deadletter: a
journaled `completed` may go out twice, which ingest's erasure log takes once.

Retention (policy/retention.yaml), held customers skipped, on the lease holder only:
resolved tickets after `tickets`, their decision records after `decision_records`, the API
audit after `audit`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel

from services.router.state import RouterState
from services.router.state.model import Changes
from shared.erasure import EngineErasure, completed
from shared.events import OutboundEvent
from shared.retention import RetentionPolicy, Sweep, remove_expired

ERASED = "erased"  # the customer of an anonymous shell


def erase_customer(state: RouterState, customer_id: str) -> Changes:
    """Anonymise the customer's tickets in memory; the changed tickets, to be stored."""
    changes = Changes()
    for t in state.tickets.values():
        if t.customer_id != customer_id:
            continue
        for c in t.conversation_ids:
            if state.open_by_conversation.get(c) == t.ticket_id:
                del state.open_by_conversation[c]
            if state.last_by_conversation.get(c) == t.ticket_id:
                del state.last_by_conversation[c]
        t.customer_id = ERASED
        t.conversation_ids = []
        changes.tickets[t.ticket_id] = t
    state.cases.pop(customer_id, None)
    state.last_agent_by_customer.pop(customer_id, None)
    return changes


@dataclass
class RouterErasure(EngineErasure):
    """Erasures and holds read in the engine's batch, applied at its end."""

    def note(self, ev: BaseModel) -> Changes:
        self.inbox.note(ev)
        return Changes()

    async def finish(
        self, state: RouterState, now: datetime
    ) -> tuple[Changes, list[OutboundEvent]]:
        requests, held = await self.inbox.take()
        changes = Changes()
        done: list[OutboundEvent] = []
        for req in requests:
            if req.customer_id in held:
                done.append(completed("router", req, {}, now, held=True))
                continue
            erased = erase_customer(state, req.customer_id)
            changes.merge(erased)
            stored = 0
            if self.db is not None:
                result = await self.db["tickets"].update_many(
                    {"customer_id": req.customer_id, "_id": {"$nin": sorted(erased.tickets)}},
                    {"$set": {"customer_id": ERASED, "conversation_ids": []}},
                )
                stored = result.modified_count
            done.append(completed("router", req, {"tickets": len(erased.tickets) + stored}, now))
        return changes, done

    def sweeps(self, policy: RetentionPolicy) -> list[Sweep]:
        db = self.db
        assert db is not None

        async def tickets(now: datetime, limit: int) -> int:
            query = {"state": "resolved", "resolved_at": {"$lt": policy.cutoff("tickets", now)}}
            return await remove_expired(db["tickets"], query, limit, held=await self.holds.held())

        async def decisions(now: datetime, limit: int) -> int:
            cutoff = policy.cutoff("decision_records", now)
            query = {"state": "resolved", "resolved_at": {"$lt": cutoff}, "decision": {"$ne": {}}}
            held = sorted(await self.holds.held())
            if held:
                query["customer_id"] = {"$nin": held}
            ids = [d["_id"] async for d in db["tickets"].find(query, {"_id": 1}).limit(limit)]
            if not ids:
                return 0
            result = await db["tickets"].update_many(
                {"_id": {"$in": ids}, **query}, {"$set": {"decision": {}}}
            )
            return int(result.modified_count)

        async def audit(now: datetime, limit: int) -> int:
            query = {"at": {"$lt": policy.cutoff("audit", now)}}
            return await remove_expired(db["api_audit"], query, limit)

        return [
            Sweep("tickets", tickets),
            Sweep("decision_records", decisions),
            Sweep("api_audit", audit),
        ]
