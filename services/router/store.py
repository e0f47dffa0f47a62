"""Router state in MongoDB: `tickets`, `agents`, and an outbox of ticket events.

Per batch of inputs: store changed documents and the events they caused (outbox), then
publish, then clear the outbox, then commit offsets. A crash anywhere re-publishes from
the outbox on start (same event ids) and skips inputs already applied.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

from pymongo import ASCENDING, DESCENDING, ReplaceOne

from services.router.engine import RouterState, Ticket
from services.router.selection import AgentState
from shared.contracts.agents import AgentProfile
from shared.events import OutboundEvent
from shared.mongo import Database, Document

APPLIED_AGENT_EVENTS_KEPT = 10_000


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
    )


def agent_doc(a: AgentState) -> Document:
    return {
        "_id": a.agent_id,
        "profile": a.profile.model_dump(mode="json"),
        "presence": a.presence,
        "load": a.load,
        "tickets": sorted(a.tickets),
        "last_assigned_at": a.last_assigned_at,
    }


def agent_from_doc(d: Document) -> AgentState:
    return AgentState(
        agent_id=d["_id"],
        profile=AgentProfile.model_validate(d["profile"]),
        presence=d.get("presence", "offline"),
        load={k: int(v) for k, v in d.get("load", {}).items()},
        tickets=set(d.get("tickets", [])),
        last_assigned_at=d.get("last_assigned_at"),
    )


class RouterStore(Protocol):
    async def ensure_indexes(self) -> None: ...

    async def get_ticket(self, ticket_id: str) -> Document | None: ...

    async def list_tickets(self, state: str, limit: int) -> list[Document]: ...

    async def get_agent(self, agent_id: str) -> Document | None: ...

    async def load(self, state: RouterState, recent_since: datetime) -> list[OutboundEvent]: ...

    async def save(
        self,
        tickets: Iterable[Ticket],
        agents: Iterable[AgentState],
        applied_agent_events: Iterable[str],
        outbox: list[OutboundEvent],
    ) -> None: ...

    async def clear_outbox(self, events: list[OutboundEvent]) -> None: ...


class MongoRouterStore:
    def __init__(self, db: Database) -> None:
        self.tickets = db["tickets"]
        self.agents = db["agents"]
        self.outbox = db["router_outbox"]
        self.applied = db["router_applied"]

    async def ensure_indexes(self) -> None:
        await self.tickets.create_index([("state", ASCENDING), ("priority", ASCENDING)])
        await self.tickets.create_index([("customer_id", ASCENDING)])
        await self.tickets.create_index([("updated_at", DESCENDING)])
        await self.outbox.create_index([("seq", ASCENDING)])

    async def load(self, state: RouterState, recent_since: datetime) -> list[OutboundEvent]:
        """Fill `state` from MongoDB; return events stored but maybe never published."""
        async for d in self.agents.find({}):
            a = agent_from_doc(d)
            state.agents[a.agent_id] = a
        query: dict[str, Any] = {
            "$or": [
                {"state": {"$ne": "resolved"}},
                {"resolved_at": {"$gte": recent_since}},
            ]
        }
        async for d in self.tickets.find(query):
            state.add_ticket(ticket_from_doc(d))
        async for d in self.applied.find({}):
            state.applied_agent_events.add(d["_id"])
        pending: list[OutboundEvent] = []
        async for d in self.outbox.find({}).sort("seq", ASCENDING):
            pending.append(
                OutboundEvent(d["topic"], d.get("key"), bytes(d["value"]), dict(d["headers"]))
            )
        return pending

    async def save(
        self,
        tickets: Iterable[Ticket],
        agents: Iterable[AgentState],
        applied_agent_events: Iterable[str],
        outbox: list[OutboundEvent],
    ) -> None:
        # Outbox first: if we die after it, start-up publishes these events again.
        if outbox:
            await self.outbox.bulk_write(
                [
                    ReplaceOne(
                        {"_id": e.id},
                        {
                            "_id": e.id,
                            "seq": i,
                            "topic": e.topic,
                            "key": e.key,
                            "value": e.value,
                            "headers": e.headers,
                        },
                        upsert=True,
                    )
                    for i, e in enumerate(outbox)
                ],
                ordered=True,
            )
        ticket_ops = [ReplaceOne({"_id": t.ticket_id}, ticket_doc(t), upsert=True) for t in tickets]
        if ticket_ops:
            await self.tickets.bulk_write(ticket_ops, ordered=False)
        agent_ops = [ReplaceOne({"_id": a.agent_id}, agent_doc(a), upsert=True) for a in agents]
        if agent_ops:
            await self.agents.bulk_write(agent_ops, ordered=False)
        applied = list(applied_agent_events)
        if applied:
            await self.applied.bulk_write(
                [ReplaceOne({"_id": e}, {"_id": e}, upsert=True) for e in applied],
                ordered=False,
            )

    async def clear_outbox(self, events: list[OutboundEvent]) -> None:
        if events:
            await self.outbox.delete_many({"_id": {"$in": [e.id for e in events]}})

    async def get_ticket(self, ticket_id: str) -> Document | None:
        return await self.tickets.find_one({"_id": ticket_id})

    async def list_tickets(self, state: str, limit: int) -> list[Document]:
        return await self.tickets.find({"state": state}).limit(limit).to_list(limit)

    async def get_agent(self, agent_id: str) -> Document | None:
        return await self.agents.find_one({"_id": agent_id})
