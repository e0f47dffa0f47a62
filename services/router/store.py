"""Router state in MongoDB: `tickets`, `agents`, the agent events applied (with the
outcomes of actions) and the event position.

Each step reaches these through the engines' journal (shared/journal.py,
`router_journal`): the step's documents and events are appended as one entry, the events
published, then the documents folded in here at once (until then the API on the lease
holder reads them from the engine: services/router/reads.py); the entry is deleted once
folded. A crash anywhere is finished by the next load: the entry is folded again
(idempotent) and the events the topic lacks are published.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

from pymongo import ASCENDING, IndexModel, ReplaceOne

from services.router.actions import ActionOutcome
from services.router.selection import AgentState
from services.router.state import RouterState
from services.router.state.model import Ticket
from shared.contracts.agents import AgentProfile
from shared.mongo import Database, Document, ensure_only_indexes

APPLIED_AGENT_EVENTS_KEPT = 10_000
TICKETS = "tickets"
AGENTS = "agents"
APPLIED = "router_applied"
META = "router_meta"
JOURNAL = "router"  # shared/journal.py: `router_journal`, `router_journal_published`
# The collections the router owns in its own database.
COLLECTIONS: tuple[str, ...] = (
    TICKETS,
    AGENTS,
    APPLIED,
    META,
    f"{JOURNAL}_journal",
    f"{JOURNAL}_journal_published",
)


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
        "possible_urgent": t.possible_urgent,
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
        possible_urgent=d.get("possible_urgent"),
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


def changes_of(
    tickets: Iterable[Ticket],
    agents: Iterable[AgentState],
    applied_agent_events: Iterable[str] = (),
    outcomes: Mapping[str, ActionOutcome] | None = None,
    position: int | None = None,
) -> dict[str, list[Document]]:
    """A step's documents by collection, as the journal holds them.

    Applied agent events are kept with the outcome of the actions among them, so
    `GET /v1/actions/{event_id}` reads it without another write per action."""
    known = outcomes or {}
    changes: dict[str, list[Document]] = {
        TICKETS: [ticket_doc(t) for t in tickets],
        AGENTS: [agent_doc(a) for a in agents],
        APPLIED: [
            {"_id": e, **known[e].doc()} if e in known else {"_id": e} for e in applied_agent_events
        ],
        META: [] if position is None else [{"_id": "router", "position": position}],
    }
    return {c: docs for c, docs in changes.items() if docs}


class RouterStore(Protocol):
    async def ensure_indexes(self) -> None: ...

    async def get_ticket(self, ticket_id: str) -> Document | None: ...

    async def list_tickets(self, state: str, limit: int) -> list[Document]: ...

    async def get_agent(self, agent_id: str) -> Document | None: ...

    async def get_action(self, event_id: str) -> Document | None:
        """What the engine made of an agent action: {"status", "reason", ...}, if applied."""
        ...

    async def load(self, state: RouterState, recent_since: datetime) -> None: ...

    async def fold(self, changes: dict[str, list[Document]]) -> None:
        """Write the newest version of a step's documents (replace by `_id`)."""
        ...


class MongoRouterStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.tickets = db[TICKETS]
        self.agents = db[AGENTS]
        self.applied = db[APPLIED]
        self.meta = db[META]

    async def ensure_indexes(self) -> None:
        # No query reads tickets by `updated_at` (the old third index): each index costs
        # every ticket write.
        await ensure_only_indexes(
            self.tickets,
            [
                IndexModel([("state", ASCENDING), ("priority", ASCENDING)]),  # list, retention
                IndexModel([("customer_id", ASCENDING)]),  # erasure
            ],
        )

    async def load(self, state: RouterState, recent_since: datetime) -> None:
        """Fill `state` from MongoDB (the journal is folded in first by the engine)."""
        meta = await self.meta.find_one({"_id": "router"})
        position = int(meta["position"]) if meta else 0
        async for d in self.agents.find({}):
            state.add_agent(agent_from_doc(d))
        query: dict[str, Any] = {
            "$or": [
                {"state": {"$ne": "resolved"}},
                {"resolved_at": {"$gte": recent_since}},
            ]
        }
        async for d in self.tickets.find(query):
            t = ticket_from_doc(d)
            state.add_ticket(t)
            # The newest event belongs to a ticket changed lately, so loaded: the position
            # rides on the tickets (no write of its own per step; META is its floor).
            position = max(position, t.position)
        state.position = position
        async for d in self.applied.find({}, {"_id": 1}):
            state.applied_agent_events.add(d["_id"])

    async def fold(self, changes: dict[str, list[Document]]) -> None:
        for collection in (TICKETS, AGENTS, APPLIED, META):
            docs = changes.get(collection)
            if docs:
                await self.db[collection].bulk_write(
                    [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in docs], ordered=False
                )

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
