"""In-memory versions of the stores, for fast service tests (never the only proof of a flow)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from services.ingest.customers import CustomerRecord, CustomerRef, primary_identity
from services.ingest.store import ClassifiedText, Correction
from services.notify.decide import Facts, TicketView
from services.notify.estimate import Ack, Deadline, Queued, Sample, samples_by_priority
from services.notify.route import Route, RouteUpdate, route_of
from services.notify.store import NotifyStores
from services.notify.store.acks import DEADLINE_GRACE_S
from services.notify.store.customers import Customer as NotifyCustomer
from services.notify.store.customers import newest
from services.notify.store.outbox import Notification
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
            else:  # a replace, as in MongoDB: a bare record drops an outcome
                self.actions.pop(d["_id"], None)
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
class FakeConversations:
    """notify's ConversationStore in memory."""

    docs: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def ensure_indexes(self) -> None:
        return None

    async def save(self, updates: Sequence[RouteUpdate]) -> None:
        for u in updates:
            r = self.docs.setdefault(
                u.conversation_id, {"_id": u.conversation_id, "assets": set(), "networks": set()}
            )
            r.update({k: v for k, v in u.latest.items() if k not in ("assets", "networks")})
            r["assets"] |= u.assets
            r["networks"] |= u.networks

    async def routes(self, conversation_ids: Iterable[str]) -> dict[str, Route]:
        return {
            c: route_of({**self.docs[c], "assets": sorted(self.docs[c]["assets"])})
            for c in conversation_ids
            if c in self.docs and "channel" in self.docs[c]
        }

    async def facts(self, conversation_ids: Iterable[str | None]) -> dict[str, Facts]:
        return {
            c: Facts(frozenset(self.docs[c]["assets"]), frozenset(self.docs[c]["networks"]))
            for c in conversation_ids
            if c and c in self.docs
        }


@dataclass
class FakeTickets:
    """notify's TicketStore in memory."""

    views: dict[str, TicketView] = field(default_factory=dict)

    async def ensure_indexes(self) -> None:
        return None

    async def get(self, ticket_ids: Iterable[str]) -> dict[str, TicketView]:
        return {t: self.views[t] for t in ticket_ids if t in self.views}

    async def save(self, views: Iterable[TicketView], now: datetime) -> None:
        for v in views:
            if v.ticket_id not in self.views or self.views[v.ticket_id].seq < v.seq:
                self.views[v.ticket_id] = v

    async def queued(self) -> dict[str, Queued]:
        return {t: q for t, v in self.views.items() if v.state == "queued" and (q := v.queued)}

    async def open_views(self, categories: Sequence[str]) -> list[TicketView]:
        return [
            v
            for v in self.views.values()
            if v.open and (not categories or v.category in categories)
        ]


@dataclass
class FakeOutbox:
    """notify's OutboxStore in memory (what the Kafka edge records)."""

    notifications: dict[str, Notification] = field(default_factory=dict)

    async def ensure_indexes(self) -> None:
        return None

    async def add(self, notifications: Sequence[Notification]) -> set[str]:
        new = {n.notification_id for n in notifications} - set(self.notifications)
        for n in notifications:
            self.notifications.setdefault(n.notification_id, n)
        return new

    def _holds(self, nid: str, claim_id: str) -> bool:
        cur = self.notifications.get(nid)
        return cur is not None and (cur.status, cur.claim_id) == ("sending", claim_id)

    async def merge(self, into: dict[str, str], held: Collection[str], claim_id: str) -> None:
        for nid, other in into.items():
            n = self.notifications[nid]
            if n.status == "pending" or (nid in held and self._holds(nid, claim_id)):
                self.notifications[nid] = replace(n, status="merged", merged_into=other)

    async def take_over(
        self, now: datetime, owner: str, claim_id: str, lease_until: datetime, limit: int
    ) -> list[Notification]:
        taken = []
        for n in list(self.notifications.values()):
            if n.status in ("pending", "sending") and n.due_at is not None and n.due_at <= now:
                inc = 1 if n.status == "sending" else 0
                n = replace(
                    n,
                    status="sending",
                    owner=owner,
                    claim_id=claim_id,
                    due_at=lease_until,
                    attempts=n.attempts + inc,
                )
                self.notifications[n.notification_id] = n
                taken.append(n)
        return taken[:limit]

    async def renew(self, ids: Collection[str], claim_id: str, lease_until: datetime) -> int:
        held = [i for i in ids if self._holds(i, claim_id)]
        for i in held:
            self.notifications[i] = replace(self.notifications[i], due_at=lease_until)
        return len(held)

    async def write(self, changed: Sequence[Notification], claim_id: str) -> int:
        held = [n for n in changed if self._holds(n.notification_id, claim_id)]
        for n in held:
            self.notifications[n.notification_id] = n
        return len(held)

    async def held(self, ids: Collection[str], claim_id: str) -> set[str]:
        return {i for i in ids if self._holds(i, claim_id)}

    async def sent_times(
        self, customer_ids: Iterable[str], since: datetime
    ) -> dict[str, list[datetime]]:
        wanted = set(customer_ids)
        out: dict[str, list[datetime]] = {}
        for n in self.notifications.values():
            if n.customer_id in wanted and n.sent_at is not None and n.sent_at >= since:
                out.setdefault(n.customer_id, []).append(n.sent_at)
        return out

    async def stats(self, now: datetime) -> tuple[int, float]:
        waiting = [n for n in self.notifications.values() if n.status in ("pending", "sending")]
        oldest = min((n.created_at for n in waiting), default=now)
        return len(waiting), (now - oldest).total_seconds()

    def of(self, ticket_id: str) -> dict[str, Notification]:
        """A ticket's notifications by cause."""
        return {n.cause: n for n in self.notifications.values() if n.ticket_id == ticket_id}


@dataclass
class FakeIncidents:
    """notify's IncidentStore in memory."""

    incidents: dict[str, Incident] = field(default_factory=dict)
    links: set[tuple[str, str]] = field(default_factory=set)

    async def ensure_indexes(self) -> None:
        return None

    async def get(self, incident_id: str) -> Incident | None:
        return self.incidents.get(incident_id)

    async def get_many(self, ids: Iterable[str]) -> dict[str, Incident]:
        return {i: self.incidents[i] for i in ids if i in self.incidents}

    async def open(self) -> list[Incident]:
        return [i for i in self.incidents.values() if i.open]

    async def recent(self, since: datetime) -> list[Incident]:
        return [i for i in self.incidents.values() if i.open or i.updated_at >= since]

    async def insert(self, incident: Incident) -> bool:
        if incident.incident_id in self.incidents:
            return False
        self.incidents[incident.incident_id] = incident
        return True

    async def replace(self, incident: Incident, expected_version: int) -> bool:
        cur = self.incidents.get(incident.incident_id)
        if cur is None or cur.version != expected_version:
            return False
        self.incidents[incident.incident_id] = incident
        return True

    async def apply(self, incident: Incident) -> Incident:
        cur = self.incidents.get(incident.incident_id)
        if cur is None or cur.version < incident.version:
            self.incidents[incident.incident_id] = incident
            return incident
        return cur

    async def link(self, links: Iterable[tuple[str, str]], now: datetime) -> None:
        self.links |= set(links)

    async def linked_tickets(self, incident_id: str) -> list[str]:
        return [t for i, t in sorted(self.links) if i == incident_id]

    async def linked_count(self, incident_id: str) -> int:
        return len(await self.linked_tickets(incident_id))

    async def stats(self) -> tuple[dict[str, int], dict[str, int]]:
        by_severity: dict[str, int] = {}
        linked: dict[str, int] = {}
        for inc in await self.open():
            by_severity[inc.severity] = by_severity.get(inc.severity, 0) + 1
            n = await self.linked_count(inc.incident_id)
            linked[inc.severity] = linked.get(inc.severity, 0) + n
        return by_severity, linked


@dataclass
class FakeCustomers:
    """notify's CustomerStore in memory (the same newest-wins rules)."""

    customers: dict[str, NotifyCustomer] = field(default_factory=dict)

    async def ensure_indexes(self) -> None:
        return None

    async def save(self, customers: Sequence[NotifyCustomer]) -> None:
        for c in newest(customers):
            cur = self.customers.get(c.customer_id)
            if c.version is None:  # a message's facts fill in until a record comes
                newer = cur is None or (cur.version is None and c.as_of > cur.as_of)
            else:
                newer = cur is None or cur.version is None or cur.version < c.version
            if newer:
                self.customers[c.customer_id] = c

    async def delete(self, customer_ids: Iterable[str]) -> None:
        for c in customer_ids:
            self.customers.pop(c, None)

    async def get(self, customer_ids: Iterable[str]) -> dict[str, NotifyCustomer]:
        return {c: self.customers[c] for c in customer_ids if c in self.customers}


@dataclass
class FakeAcks:
    """notify's AckStore in memory."""

    acks: dict[str, Ack] = field(default_factory=dict)

    async def ensure_indexes(self) -> None:
        return None

    async def opened(self, items: Sequence[tuple[str, str, datetime]], now: datetime) -> None:
        for tid, ce_id, until in items:
            cur = self.acks.get(tid, Ack(tid))
            wait = min(until, cur.wait_until or until)
            self.acks[tid] = replace(cur, cause_event_id=ce_id, wait_until=wait)

    async def deadlines(self, items: Sequence[tuple[str, Deadline]], now: datetime) -> None:
        grace = now + timedelta(seconds=DEADLINE_GRACE_S)
        for tid, d in items:
            cur = self.acks.get(tid, Ack(tid))
            if cur.deadline is None or cur.deadline.at < d.at:
                wait = min(grace, cur.wait_until or grace)
                self.acks[tid] = replace(cur, deadline=d, wait_until=wait)

    async def get(self, ticket_ids: Iterable[str]) -> dict[str, Ack]:
        return {t: self.acks[t] for t in ticket_ids if t in self.acks}

    async def overdue(self, now: datetime, limit: int) -> list[Ack]:
        return [
            a
            for a in self.acks.values()
            if not a.decided
            and a.cause_event_id is not None
            and a.wait_until is not None
            and a.wait_until <= now
        ][:limit]

    async def told(self, acks: Sequence[Ack], now: datetime) -> None:
        for a in acks:
            cur = self.acks.get(a.ticket_id, a)
            self.acks[a.ticket_id] = replace(
                cur,
                cause_event_id=a.cause_event_id,
                deadline=a.deadline,
                decided=True,
                position=a.position,
                expected_s=a.expected_s,
                told_at=a.told_at,
                recheck_at=a.recheck_at,
            )

    async def rechecks_due(self, now: datetime, limit: int) -> list[Ack]:
        return [a for a in self.acks.values() if a.recheck_at is not None and a.recheck_at <= now][
            :limit
        ]

    async def rechecked(self, ticket_ids: Iterable[str]) -> None:
        for t in ticket_ids:
            self.acks[t] = replace(self.acks[t], recheck_at=None)


@dataclass
class FakeQueueStats:
    """notify's QueueStatsStore in memory."""

    samples: list[Sample] = field(default_factory=list)
    keep: int = 64

    async def ensure_indexes(self) -> None:
        return None

    async def record(self, samples: Sequence[Sample]) -> None:
        self.samples += samples

    async def recent(self) -> dict[str, list[Sample]]:
        return {p: items[-self.keep :] for p, items in samples_by_priority(self.samples).items()}


@dataclass
class FakeNotify:
    """Every notify port in memory, and the `NotifyStores` the app takes."""

    conversations: FakeConversations = field(default_factory=FakeConversations)
    tickets: FakeTickets = field(default_factory=FakeTickets)
    outbox: FakeOutbox = field(default_factory=FakeOutbox)
    incidents: FakeIncidents = field(default_factory=FakeIncidents)
    customers: FakeCustomers = field(default_factory=FakeCustomers)
    acks: FakeAcks = field(default_factory=FakeAcks)
    queue: FakeQueueStats = field(default_factory=FakeQueueStats)

    @property
    def stores(self) -> NotifyStores:
        return NotifyStores(
            conversations=self.conversations,
            tickets=self.tickets,
            outbox=self.outbox,
            incidents=self.incidents,
            customers=self.customers,
            acks=self.acks,
            queue=self.queue,
        )


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
