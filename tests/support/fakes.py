"""In-memory versions of the stores, for fast service tests (never the only proof of a flow)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.ingest.customers import CustomerRecord, CustomerRef, primary_identity
from services.ingest.store import ClassifiedText, Correction
from services.router.actions import ActionOutcome
from services.router.engine import RouterState, Ticket
from services.router.selection import AgentState
from services.router.store import agent_doc, agent_from_doc, ticket_doc, ticket_from_doc
from services.sla.deadlines import SlaState, Timer
from shared.contracts.messages import Identity
from shared.events import OutboundEvent
from shared.ids import customer_id
from shared.mongo import Document


@dataclass
class FakeCustomerStore:
    by_identity: dict[tuple[str, str], str] = field(default_factory=dict)
    customers: dict[str, CustomerRecord] = field(default_factory=dict)

    async def ensure_indexes(self) -> None:
        return None

    async def resolve_many(
        self, identity_sets: Sequence[tuple[Identity, ...]], now: datetime
    ) -> list[CustomerRef]:
        refs = []
        for ids in identity_sets:
            known = next(
                (
                    self.by_identity[(i.kind, i.value)]
                    for i in ids
                    if (i.kind, i.value) in self.by_identity
                ),
                None,
            )
            if known is None and ids:
                p = primary_identity(ids)
                cid, new = customer_id(p.kind, p.value), True
            else:
                cid, new = known or "cus_anonymous", False
            for i in ids:
                self.by_identity[(i.kind, i.value)] = cid
            rec = self.customers.get(cid)
            refs.append(
                CustomerRef(
                    cid,
                    rec.tier if rec else "standard",
                    rec.anti_phishing_code if rec else None,
                    new,
                    language=rec.language if rec else None,
                )
            )
        return refs

    async def upsert(self, customer: CustomerRecord) -> None:
        assert customer.customer_id is not None
        self.customers[customer.customer_id] = customer
        for i in customer.identities:
            self.by_identity[(i.kind, i.value)] = customer.customer_id


@dataclass
class FakeTrainingStore:
    """ingest's kept texts and training examples, in memory."""

    texts: dict[str, ClassifiedText] = field(default_factory=dict)
    examples_by_ticket: dict[str, Document] = field(default_factory=dict)

    async def ensure_indexes(self) -> None:
        return None

    async def remember(self, texts: Sequence[ClassifiedText]) -> None:
        for t in texts:
            self.texts.setdefault(t.message_id, t)

    async def learn(self, corrections: Sequence[Correction]) -> int:
        stored = 0
        for c in corrections:
            kept = self.texts.get(c.message_id)
            if kept is not None:
                self.examples_by_ticket[c.ticket_id] = {
                    "_id": c.ticket_id,
                    "message_id": c.message_id,
                    "text": kept.text,
                    "language": kept.language,
                    "predicted": kept.category,
                    "category": c.category,
                    "agent_id": c.agent_id,
                    "at": c.at,
                }
                stored += 1
        return stored

    async def examples(self) -> list[Document]:
        return [self.examples_by_ticket[k] for k in sorted(self.examples_by_ticket)]


@dataclass
class FakeRouterStore:
    """Keeps documents as MongoDB would, so a `load` rebuilds the state like a takeover."""

    tickets: dict[str, dict[str, Any]] = field(default_factory=dict)
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    outbox: list[OutboundEvent] = field(default_factory=list)
    applied: set[str] = field(default_factory=set)
    actions: dict[str, dict[str, Any]] = field(default_factory=dict)  # outcomes by event id
    position: int = 0
    saves: int = 0
    fail_next_save: bool = False

    async def ensure_indexes(self) -> None:
        return None

    async def load(self, state: RouterState, recent_since: datetime) -> list[OutboundEvent]:
        state.position = self.position
        for a in self.agents.values():
            state.add_agent(agent_from_doc(a))
        for d in self.tickets.values():
            if d["state"] != "resolved" or d["resolved_at"] >= recent_since:
                state.add_ticket(ticket_from_doc(d))
        state.applied_agent_events.update(self.applied)
        return list(self.outbox)

    async def save(
        self,
        tickets: Iterable[Ticket],
        agents: Iterable[AgentState],
        applied_agent_events: Iterable[str],
        outbox: list[OutboundEvent],
        position: int = 0,
        outcomes: Mapping[str, ActionOutcome] | None = None,
    ) -> None:
        if self.fail_next_save:
            self.fail_next_save = False
            raise ConnectionError("store unavailable")  # nothing written, like a transaction
        self.saves += 1
        self.outbox.extend(outbox)
        for t in tickets:
            self.tickets[t.ticket_id] = ticket_doc(t)
        for a in agents:
            self.agents[a.agent_id] = agent_doc(a)
        self.applied.update(applied_agent_events)
        for eid, outcome in (outcomes or {}).items():
            self.actions[eid] = {"_id": eid, **outcome.doc()}
        if outbox:
            self.position = position

    async def clear_outbox(self, events: list[OutboundEvent]) -> None:
        ids = {e.id for e in events}
        self.outbox = [e for e in self.outbox if e.id not in ids]

    async def get_ticket(self, ticket_id: str) -> dict[str, Any] | None:
        return self.tickets.get(ticket_id)

    async def list_tickets(self, state: str, limit: int) -> list[dict[str, Any]]:
        return [t for t in self.tickets.values() if t["state"] == state][:limit]

    async def get_agent(self, agent_id: str) -> dict[str, Any] | None:
        return self.agents.get(agent_id)

    async def get_action(self, event_id: str) -> dict[str, Any] | None:
        return self.actions.get(event_id)


@dataclass
class FakeSlaStore:
    timers: dict[str, Timer] = field(default_factory=dict)
    progress: dict[str, int] = field(default_factory=dict)

    async def ensure_indexes(self) -> None:
        return None

    async def load(self, state: SlaState) -> None:
        for t in self.timers.values():
            state.add(t)
        state.applied_seq.update(self.progress)

    async def save(self, timers: Iterable[Timer], progress: dict[str, int]) -> None:
        for t in timers:
            self.timers[t.timer_id] = t
        self.progress.update(progress)


@dataclass
class FakeNotificationStore:
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def ensure_indexes(self) -> None:
        return None

    async def add_new(self, docs: list[dict[str, Any]]) -> set[str]:
        new = {d["_id"] for d in docs if d["_id"] not in self.docs}
        for d in docs:
            self.docs.setdefault(d["_id"], d)
        return new


@dataclass
class Record:
    """Shaped like aiokafka's ConsumerRecord, for handler tests."""

    topic: str
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    key: bytes | None = None
    partition: int = 0
    offset: int = 0


def record_of(event: OutboundEvent, offset: int = 0) -> Record:
    return Record(
        topic=event.topic,
        value=event.value,
        headers=[(k, v.encode()) for k, v in event.headers.items()],
        key=event.key.encode() if event.key else None,
        offset=offset,
    )


class HeldLease:
    """A lease this process always holds (in-memory tests have a single engine)."""

    name = "test"
    holder = "test"
    ttl_s = 6.0
    renew_every_s = 2.0

    async def acquire_or_renew(self) -> bool:
        return True

    def valid(self) -> bool:
        return True

    def check(self) -> None:
        return None

    async def release(self) -> None:
        return None
