"""Router state in MongoDB: `tickets`, `agents`, and an outbox of each batch.

Per batch of inputs (or clock tick): store the batch's outbox entry (the events it caused
and the documents it changed), apply the documents, publish, clear the outbox, then commit
offsets. A crash anywhere re-applies and re-publishes the entry on start (same event ids)
and skips inputs already applied, so tickets, agents' loads and events stay in step.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from pymongo import ASCENDING, DESCENDING, ReplaceOne

from services.router.actions import ActionOutcome
from services.router.engine import RouterState, Ticket
from services.router.selection import AgentState
from shared.contracts.agents import AgentProfile
from shared.events import OutboundEvent
from shared.mongo import Database, Document

# The collections the router owns in its own database.
COLLECTIONS: tuple[str, ...] = (
    "tickets",
    "agents",
    "router_outbox",
    "router_applied",
    "router_meta",
)

APPLIED_AGENT_EVENTS_KEPT = 10_000
OUTBOX_PART_ITEMS = 250  # documents or events per outbox entry part


def ticket_doc(t: Ticket) -> Document:
    return {
        "_id": t.ticket_id,
        "customer_id": t.customer_id,
        "customer_tier": t.customer_tier,
        "channel": t.channel,
        "category": t.category,
        "priority": t.priority,
        "language": t.language,
        "state": t.state,
        "agent_id": t.agent_id,
        "opened_at": t.opened_at,
        "updated_at": t.updated_at,
        "waiting_since": t.waiting_since,
        "resolved_at": t.resolved_at,
        "conversation_ids": t.conversation_ids,
        "message_ids": t.message_ids,
        "reasons": t.reasons,
        "decision": t.decision,
        "sequence": t.sequence,
        "position": t.position,
        "pool": t.pool,
        "emergency": t.emergency,
        "sla_risk": t.sla_risk,
        "escalated": t.escalated,
        "offer_expires_at": t.offer_expires_at,
        "passed_by": t.passed_by,
        "breaches": t.breaches,
        "message_at": t.message_at,
        "offered_at": t.offered_at,
        "accepted_at": t.accepted_at,
        "case_reported_at": t.case_reported_at,
        "handled_by": t.handled_by,
        "handled_at": t.handled_at,
    }


def ticket_from_doc(d: Document) -> Ticket:
    return Ticket(
        ticket_id=d["_id"],
        customer_id=d["customer_id"],
        customer_tier=d["customer_tier"],
        channel=d["channel"],
        category=d["category"],
        priority=d["priority"],
        language=d["language"],
        state=d["state"],
        opened_at=d["opened_at"],
        updated_at=d["updated_at"],
        waiting_since=d["waiting_since"],
        agent_id=d.get("agent_id"),
        conversation_ids=list(d.get("conversation_ids", [])),
        message_ids=list(d.get("message_ids", [])),
        reasons=list(d.get("reasons", [])),
        decision=dict(d.get("decision", {})),
        sequence=int(d.get("sequence", 0)),
        resolved_at=d.get("resolved_at"),
        position=int(d.get("position", 0)),
        pool=d.get("pool", "general"),
        emergency=bool(d.get("emergency", False)),
        sla_risk=bool(d.get("sla_risk", False)),
        escalated=bool(d.get("escalated", False)),
        offer_expires_at=d.get("offer_expires_at"),
        passed_by=list(d.get("passed_by", [])),
        breaches=list(d.get("breaches", [])),
        message_at=d.get("message_at"),
        offered_at=d.get("offered_at"),
        accepted_at=d.get("accepted_at"),
        case_reported_at=d.get("case_reported_at"),
        handled_by=d.get("handled_by"),
        handled_at=d.get("handled_at"),
    )


def agent_doc(a: AgentState) -> Document:
    return {
        "_id": a.agent_id,
        "profile": a.profile.model_dump(mode="json"),
        "presence": a.presence,
        "load": a.load,
        "tickets": sorted(a.tickets),
        "last_assigned_at": a.last_assigned_at,
        "presence_since": a.presence_since,
        "requeue_due_at": a.requeue_due_at,
    }


def agent_from_doc(d: Document) -> AgentState:
    return AgentState(
        agent_id=d["_id"],
        profile=AgentProfile.model_validate(d["profile"]),
        presence=d.get("presence", "offline"),
        load={k: int(v) for k, v in d.get("load", {}).items()},
        tickets=set(d.get("tickets", [])),
        last_assigned_at=d.get("last_assigned_at"),
        presence_since=d.get("presence_since"),
        requeue_due_at=d.get("requeue_due_at"),
    )


def _event(d: Document) -> OutboundEvent:
    return OutboundEvent(d["topic"], d.get("key"), bytes(d["value"]), dict(d["headers"]))


class RouterStore(Protocol):
    async def ensure_indexes(self) -> None: ...

    async def get_ticket(self, ticket_id: str) -> Document | None: ...

    async def list_tickets(self, state: str, limit: int) -> list[Document]: ...

    async def get_agent(self, agent_id: str) -> Document | None: ...

    async def get_action(self, event_id: str) -> Document | None:
        """What the engine made of an agent action: {"status", "reason", ...}, if applied."""
        ...

    async def load(self, state: RouterState, recent_since: datetime) -> list[OutboundEvent]: ...

    async def save(
        self,
        tickets: Iterable[Ticket],
        agents: Iterable[AgentState],
        applied_agent_events: Iterable[str],
        outbox: list[OutboundEvent],
        position: int = 0,
        outcomes: Mapping[str, ActionOutcome] | None = None,
    ) -> None: ...

    async def clear_outbox(self, events: list[OutboundEvent]) -> None: ...


class MongoRouterStore:
    """Each batch is written first as one outbox entry (its events and every document it
    changed), then applied to `tickets`, `agents`, `router_applied` and `router_meta`. A
    single-document insert is atomic, so a crash leaves either no trace of the batch (the
    inputs come again) or a complete entry that start-up applies again and publishes. No
    multi-document transaction: a killed holder's open transaction would lock the agents'
    documents against its successor until the server gives up on it (a minute).
    """

    def __init__(self, db: Database) -> None:
        self.tickets = db["tickets"]
        self.agents = db["agents"]
        self.outbox = db["router_outbox"]
        self.applied = db["router_applied"]
        self.meta = db["router_meta"]
        self._unpublished: list[str] = []  # outbox entries written, not yet cleared

    async def ensure_indexes(self) -> None:
        await self.tickets.create_index([("state", ASCENDING), ("priority", ASCENDING)])
        await self.tickets.create_index([("customer_id", ASCENDING)])
        await self.tickets.create_index([("updated_at", DESCENDING)])
        await self.outbox.create_index([("seq", ASCENDING)])

    async def load(self, state: RouterState, recent_since: datetime) -> list[OutboundEvent]:
        """Fill `state` from MongoDB; return events stored but maybe never published."""
        pending = await self._recover()
        meta = await self.meta.find_one({"_id": "router"})
        state.position = int(meta["position"]) if meta else 0
        async for d in self.agents.find({}):
            state.add_agent(agent_from_doc(d))
        query: dict[str, Any] = {
            "$or": [
                {"state": {"$ne": "resolved"}},
                {"resolved_at": {"$gte": recent_since}},
            ]
        }
        async for d in self.tickets.find(query):
            state.add_ticket(ticket_from_doc(d))
        async for d in self.applied.find({}, {"_id": 1}):
            state.applied_agent_events.add(d["_id"])
        return pending

    async def _recover(self) -> list[OutboundEvent]:
        """Apply complete outbox entries again (idempotent), drop partial ones."""
        batches: dict[str, list[Document]] = {}
        pending: list[OutboundEvent] = []
        self._unpublished = []
        async for d in self.outbox.find({}).sort("seq", ASCENDING):
            if "batch" not in d:  # an entry of the earlier format: one event per document
                pending.append(_event(d))
                self._unpublished.append(str(d["_id"]))
                continue
            batches.setdefault(str(d["batch"]), []).append(d)
        for batch, parts in batches.items():
            if len(parts) != parts[0].get("parts", 1):
                # Died while writing the entry: nothing of it was applied; inputs come again.
                await self.outbox.delete_many({"batch": batch})
                continue
            parts.sort(key=lambda d: d.get("part", 0))
            await self._apply(
                [t for d in parts for t in d.get("tickets", [])],
                [a for d in parts for a in d.get("agents", [])],
                [e for d in parts for e in d.get("applied", [])],
                parts[0].get("position"),
            )
            pending += [_event(e) for d in parts for e in d.get("events", [])]
            self._unpublished.append(batch)
        return pending

    async def save(
        self,
        tickets: Iterable[Ticket],
        agents: Iterable[AgentState],
        applied_agent_events: Iterable[str],
        outbox: list[OutboundEvent],
        position: int = 0,
        outcomes: Mapping[str, ActionOutcome] | None = None,
    ) -> None:
        """One batch: its outbox entry, then its documents; `position`: last event number.

        Applied agent events are kept with the outcome of the actions among them, so
        `GET /v1/actions/{event_id}` reads it without another write per action.
        """
        ticket_docs = [ticket_doc(t) for t in tickets]
        agent_docs = [agent_doc(a) for a in agents]
        known = outcomes or {}
        applied = [
            {"_id": e, **known[e].doc()} if e in known else {"_id": e} for e in applied_agent_events
        ]
        if not (ticket_docs or agent_docs or applied or outbox):
            return
        batch = uuid.uuid4().hex
        events = [
            {"topic": e.topic, "key": e.key, "value": e.value, "headers": e.headers} for e in outbox
        ]
        # Parts keep each entry well below MongoDB's 16 MB document limit.
        size = max(len(ticket_docs), len(agent_docs), len(applied), len(events))
        parts = max(1, -(-size // OUTBOX_PART_ITEMS))
        seq = time.time_ns()
        entry = [
            {
                "_id": f"{batch}:{i}",
                "batch": batch,
                "part": i,
                "parts": parts,
                "seq": seq,
                "position": position,
                "tickets": ticket_docs[i * OUTBOX_PART_ITEMS : (i + 1) * OUTBOX_PART_ITEMS],
                "agents": agent_docs[i * OUTBOX_PART_ITEMS : (i + 1) * OUTBOX_PART_ITEMS],
                "applied": applied[i * OUTBOX_PART_ITEMS : (i + 1) * OUTBOX_PART_ITEMS],
                "events": events[i * OUTBOX_PART_ITEMS : (i + 1) * OUTBOX_PART_ITEMS],
            }
            for i in range(parts)
        ]
        await self.outbox.insert_many(entry, ordered=True)
        self._unpublished.append(batch)
        await self._apply(ticket_docs, agent_docs, applied, position if outbox else None)

    async def _apply(
        self,
        ticket_docs: list[Document],
        agent_docs: list[Document],
        applied: Sequence[Document | str],
        position: int | None,
    ) -> None:
        if ticket_docs:
            await self.tickets.bulk_write(
                [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in ticket_docs],
                ordered=False,
            )
        if agent_docs:
            await self.agents.bulk_write(
                [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in agent_docs],
                ordered=False,
            )
        if applied:
            # Entries written before outcomes were kept are bare ids.
            docs = [{"_id": e} if isinstance(e, str) else e for e in applied]
            await self.applied.bulk_write(
                [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in docs],
                ordered=False,
            )
        if position is not None:
            await self.meta.replace_one({"_id": "router"}, {"position": position}, upsert=True)

    async def clear_outbox(self, events: list[OutboundEvent]) -> None:
        """The batches saved so far are published: forget their outbox entries."""
        if self._unpublished:
            done = self._unpublished
            await self.outbox.delete_many(
                {"$or": [{"batch": {"$in": done}}, {"_id": {"$in": done}}]}
            )
            self._unpublished = []

    async def get_ticket(self, ticket_id: str) -> Document | None:
        return await self.tickets.find_one({"_id": ticket_id})

    async def list_tickets(self, state: str, limit: int) -> list[Document]:
        # Roughly the queue's order (the engine's exact order needs its in-memory keys).
        found = self.tickets.find({"state": state}).sort(
            [("priority", ASCENDING), ("waiting_since", ASCENDING)]
        )
        return await found.limit(limit).to_list(limit)

    async def get_agent(self, agent_id: str) -> Document | None:
        return await self.agents.find_one({"_id": agent_id})

    async def get_action(self, event_id: str) -> Document | None:
        return await self.applied.find_one({"_id": event_id, "kind": "action"})
