"""In-memory versions of the stores, for fast service tests (never the only proof of a flow)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.ingest.customers import CustomerRecord, CustomerRef, primary_identity
from services.ingest.store import ClassifiedText, Correction
from services.notify.decide import Facts, TicketView
from services.notify.route import RouteUpdate
from services.router.state import RouterState
from services.router.store import (
    AGENTS,
    APPLIED,
    META,
    TICKETS,
    agent_from_doc,
    ticket_from_doc,
)
from services.sla.deadlines import SlaState, Timer
from services.sla.store import TIMERS, timer_from_doc
from shared.contracts.incidents import Incident
from shared.contracts.messages import Identity
from shared.events import OutboundEvent
from shared.ids import customer_id
from shared.mongo import Document


@dataclass
class FakeCustomerStore:
    by_identity: dict[tuple[str, str], str] = field(default_factory=dict)
    customers: dict[str, CustomerRecord] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)  # customer id -> version

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
                self.versions[cid] = 1
            else:
                cid, new = known or "cus_anonymous", False
            for i in ids:
                self.by_identity[(i.kind, i.value)] = cid
            refs.append(self._ref(cid, new))
        return refs

    def _ref(self, cid: str, new: bool = False) -> CustomerRef:
        rec = self.customers.get(cid)
        return CustomerRef(
            cid,
            rec.tier if rec else "standard",
            rec.anti_phishing_code if rec else None,
            new,
            language=rec.language if rec else None,
            version=self.versions.get(cid, 0),
        )

    async def upsert(self, customer: CustomerRecord) -> CustomerRef:
        [ref] = await self.upsert_many([customer])
        return ref

    async def upsert_many(self, records: Sequence[CustomerRecord]) -> list[CustomerRef]:
        refs = []
        for customer in records:
            assert customer.customer_id is not None
            cid = customer.customer_id
            self.customers[cid] = customer
            self.versions[cid] = self.versions.get(cid, 0) + 1
            for i in customer.identities:
                self.by_identity[(i.kind, i.value)] = cid
            refs.append(self._ref(cid))
        return refs


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
    applied: set[str] = field(default_factory=set)
    actions: dict[str, dict[str, Any]] = field(default_factory=dict)  # outcomes by event id
    position: int = 0
    fail_next_save: bool = False

    async def ensure_indexes(self) -> None:
        return None

    async def load(self, state: RouterState, recent_since: datetime) -> None:
        state.position = self.position
        for a in self.agents.values():
            state.add_agent(agent_from_doc(a))
        for d in self.tickets.values():
            if d["state"] != "resolved" or d["resolved_at"] >= recent_since:
                state.add_ticket(ticket_from_doc(d))
        state.applied_agent_events.update(self.applied)

    async def fold(self, changes: dict[str, list[dict[str, Any]]]) -> None:
        if self.fail_next_save:
            self.fail_next_save = False
            raise ConnectionError("store unavailable")
        for d in changes.get(TICKETS, ()):
            self.tickets[d["_id"]] = d
        for d in changes.get(AGENTS, ()):
            self.agents[d["_id"]] = d
        for d in changes.get(APPLIED, ()):
            self.applied.add(d["_id"])
            if d.get("kind") == "action":
                self.actions[d["_id"]] = d
        for d in changes.get(META, ()):
            self.position = int(d["position"])

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

    async def fold(self, changes: dict[str, list[dict[str, Any]]]) -> None:
        for d in changes.get(TIMERS, ()):
            t = timer_from_doc(d)
            self.timers[t.timer_id] = t
            self.progress[t.ticket_id] = max(self.progress.get(t.ticket_id, 0), t.seq)


@dataclass
class FakeNotifyStore:
    """The part of the NotifyStore protocol the Kafka edge uses, in memory."""

    docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    views: dict[str, TicketView] = field(default_factory=dict)
    routes: dict[str, dict[str, Any]] = field(default_factory=dict)
    incidents: dict[str, Incident] = field(default_factory=dict)
    links: set[tuple[str, str]] = field(default_factory=set)
    codes: dict[str, str] = field(default_factory=dict)

    async def ensure_indexes(self) -> None:
        return None

    async def save_routes(self, updates: Sequence[RouteUpdate]) -> None:
        for u in updates:
            r = self.routes.setdefault(u.conversation_id, {"assets": set(), "networks": set()})
            r.update(u.latest)
            r["assets"] |= u.assets
            r["networks"] |= u.networks

    async def get_views(self, ticket_ids: Iterable[str]) -> dict[str, TicketView]:
        return {t: self.views[t] for t in ticket_ids if t in self.views}

    async def save_views(self, views: Iterable[TicketView], now: datetime) -> None:
        for v in views:
            if v.ticket_id not in self.views or self.views[v.ticket_id].seq < v.seq:
                self.views[v.ticket_id] = v

    async def queued_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for v in self.views.values():
            if v.state == "queued":
                out[v.priority] = out.get(v.priority, 0) + 1
        return out

    async def get_facts(self, conversation_ids: Iterable[str | None]) -> dict[str, Facts]:
        return {
            c: Facts(frozenset(self.routes[c]["assets"]), frozenset(self.routes[c]["networks"]))
            for c in conversation_ids
            if c in self.routes
        }

    async def anti_phishing_codes(self, customer_ids: Iterable[str]) -> dict[str, str]:
        return {c: self.codes[c] for c in customer_ids if c in self.codes}

    async def add_notifications(self, docs: Sequence[dict[str, Any]]) -> set[str]:
        new = {d["_id"] for d in docs if d["_id"] not in self.docs}
        for d in docs:
            self.docs.setdefault(d["_id"], d)
        return new

    async def merge_pending(self, ids: Iterable[str], into: dict[str, str]) -> None:
        for i in ids:
            if self.docs[i]["status"] == "pending":
                self.docs[i]["status"] = "merged"

    async def add_links(self, links: Iterable[tuple[str, str]], now: datetime) -> None:
        self.links |= set(links)

    async def get_incidents(self, ids: Iterable[str]) -> dict[str, Incident]:
        return {i: self.incidents[i] for i in ids if i in self.incidents}

    async def open_incidents(self) -> list[Incident]:
        return [i for i in self.incidents.values() if i.open]

    async def apply_incident(self, incident: Incident) -> Incident:
        cur = self.incidents.get(incident.incident_id)
        if cur is None or cur.version < incident.version:
            self.incidents[incident.incident_id] = incident
            return incident
        return cur

    async def open_views(self, categories: Sequence[str]) -> list[TicketView]:
        return [
            v
            for v in self.views.values()
            if v.open and (not categories or v.category in categories)
        ]

    async def linked_views(self, incident_id: str) -> list[TicketView]:
        return [self.views[t] for i, t in sorted(self.links) if i == incident_id]

    def of(self, ticket_id: str) -> dict[str, dict[str, Any]]:
        return {d["cause"]: d for d in self.docs.values() if d["ticket_id"] == ticket_id}


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
    renew_every_s = 2.0

    async def acquire_or_renew(self) -> bool:
        return True

    def valid(self) -> bool:
        return True

    def check(self) -> None:
        return None

    async def release(self) -> None:
        return None
