"""What the router's API reads: the collections, and on the lease holder the engine first.

The engine publishes a step's events as soon as its journal entry is stored and folds the
documents into the collections after that (services/router/engine.py), so for the length
of a fold the topic is ahead of the collections. On the replica that holds the lease the
API reads those journaled documents from the engine: a desk that saw an event and asks
this replica sees the ticket as the event left it. Other replicas read the collections,
which trail the topic by at most one fold.

The check of an agent action (services/router/actions.py) asks the engine's memory on the
lease holder: no store read before the action is published. The engine checks again when
it applies the action, and rejects what slipped through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from services.router.store import AGENTS, APPLIED, TICKETS, RouterStore
from shared.mongo import Document


class EngineView(Protocol):
    """What the API may ask the engine of its own replica (answers only on the holder)."""

    def journaled(self, collection: str, doc_id: Any) -> Document | None: ...

    def journaled_in(self, collection: str) -> list[Document]: ...

    def ticket_holder(self, ticket_id: str) -> tuple[str, str | None] | None: ...

    async def apply_ahead(self, record: Any) -> bool: ...


@dataclass(frozen=True)
class Reads:
    store: RouterStore
    engine: EngineView | None = None

    def _journaled(self, collection: str, doc_id: str) -> Document | None:
        return self.engine.journaled(collection, doc_id) if self.engine else None

    async def get_ticket(self, ticket_id: str) -> Document | None:
        return self._journaled(TICKETS, ticket_id) or await self.store.get_ticket(ticket_id)

    async def get_agent(self, agent_id: str) -> Document | None:
        return self._journaled(AGENTS, agent_id) or await self.store.get_agent(agent_id)

    async def get_action(self, event_id: str) -> Document | None:
        doc = self._journaled(APPLIED, event_id)
        if doc is not None and doc.get("kind") == "action":
            return doc
        return await self.store.get_action(event_id)

    async def list_tickets(self, state: str, limit: int) -> list[Document]:
        docs = await self.store.list_tickets(state, limit)
        newer = {d["_id"]: d for d in self.engine.journaled_in(TICKETS)} if self.engine else {}
        if not newer:
            return docs
        merged = {d["_id"]: d for d in docs if d["_id"] not in newer}
        merged.update({i: d for i, d in newer.items() if d["state"] == state})
        ordered = sorted(merged.values(), key=lambda d: (d["priority"], d["waiting_since"]))
        return ordered[:limit]

    async def ticket_holder(self, ticket_id: str) -> tuple[str, str | None] | None:
        """(state, agent) of the ticket: the engine's memory, else the newest document."""
        held = self.engine.ticket_holder(ticket_id) if self.engine else None
        if held is not None:
            return held
        doc = await self.get_ticket(ticket_id)
        return (doc["state"], doc.get("agent_id")) if doc is not None else None
