"""The routing engine: tickets and agents in memory, every decision a function of
(state, input, now) that returns the ticket events it caused. No I/O here.

Ticket states: queued -> offered -> assigned -> (waiting_on_customer <-> assigned) -> resolved;
an offer that expires or is declined, and accepted work of an agent gone for longer than
the grace period, go back to `queued` with their original age.

Structures (sized for 100,000 open and 10,000+ waiting tickets):
- `queue`: waiting tickets per need class, heaps ordered best first (services.router.queue);
- `timers`: one heap of (due_at, kind, id) for offer expiry and away-agent requeueing,
  fired by `tick(now)` on the lease holder like any other input;
- `counts`: tickets by (state, priority), kept as tickets change, for the metrics;
- `position`: the router-wide event number, so the ticket log replays in decision order.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.router.actions import HOLDS_CAPACITY, ActionOutcome, Refusal, refusal
from services.router.priority import (
    PRIORITY_RANK,
    QueueKey,
    RoutingPolicy,
    prioritize,
    queue_key,
    raised,
)
from services.router.queue import ClassKey, TicketQueue
from services.router.selection import (
    AgentState,
    Choice,
    Need,
    choose_agent,
    fit,
)
from shared.contracts.agents import (
    AgentActionTaken,
    AgentPresenceChanged,
    AgentProfileUpdated,
)
from shared.contracts.common import CHANNELS, Category, Channel, Priority
from shared.contracts.messages import MessageReceived
from shared.contracts.sla import SlaEvent
from shared.contracts.tickets import TicketEvent, TicketEventName
from shared.ids import stable_id

OPEN_STATES = frozenset({"queued", "offered", "assigned", "waiting_on_customer"})
ACCEPTED_WORK = frozenset({"assigned", "waiting_on_customer"})
PASSED_KEPT = 16
CANDIDATES_LISTED = 20  # in a decision record; the rest are counted

OFFER = "offer"
REQUEUE = "requeue"


@dataclass
class Ticket:
    ticket_id: str
    customer_id: str
    customer_tier: str
    channel: Channel
    category: Category
    priority: Priority
    language: str
    state: str
    opened_at: datetime
    updated_at: datetime
    # When the current opening started waiting: kept through expiries and requeues, so a
    # ticket coming back to the queue keeps its age.
    waiting_since: datetime
    agent_id: str | None = None
    conversation_ids: list[str] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    decision: dict[str, Any] = field(default_factory=dict)
    sequence: int = 0
    resolved_at: datetime | None = None
    pool: str = "general"
    emergency: bool = False
    sla_risk: bool = False
    escalated: bool = False
    offer_expires_at: datetime | None = None
    passed_by: list[str] = field(default_factory=list)  # agents who declined / let expire
    breaches: list[str] = field(default_factory=list)  # SLA timer ids already escalated
    message_at: datetime | None = None  # the message that started the current opening
    offered_at: datetime | None = None  # first offer of the current opening
    accepted_at: datetime | None = None
    case_reported_at: datetime | None = None  # last stolen-funds/takeover report (merging)
    handled_by: str | None = None  # the agent who last accepted it
    handled_at: datetime | None = None
    position: int = 0
    routed: bool = True  # False between `opened`/`reopened` and its first routing decision

    def need(self) -> Need:
        return Need(self.channel, self.category, self.language, self.priority, self.pool)

    def klass(self) -> ClassKey:
        return (self.pool, self.channel, self.category, self.language)


# (what, priority, channel, seconds): "offer" / "accept" latencies for the histograms
Timing = tuple[str, Priority, Channel, float]


@dataclass
class Changes:
    """What one input changed: documents to store, events to publish, facts to measure."""

    events: list[TicketEvent] = field(default_factory=list)
    tickets: dict[str, Ticket] = field(default_factory=dict)
    agents: dict[str, AgentState] = field(default_factory=dict)
    timings: list[Timing] = field(default_factory=list)
    expired: list[tuple[Channel, str]] = field(default_factory=list)  # (channel, why)
    outcomes: dict[str, ActionOutcome] = field(default_factory=dict)  # by action event id

    def merge(self, other: Changes) -> None:
        self.events.extend(other.events)
        self.tickets.update(other.tickets)
        self.agents.update(other.agents)
        self.timings.extend(other.timings)
        self.expired.extend(other.expired)
        self.outcomes.update(other.outcomes)

    def __bool__(self) -> bool:
        return bool(self.events or self.tickets or self.agents or self.outcomes)


def ticket_id_for(message_id: str) -> str:
    return stable_id("tkt", message_id, length=20)


@dataclass
class RouterState:
    policy: RoutingPolicy
    tickets: dict[str, Ticket] = field(default_factory=dict)
    agents: dict[str, AgentState] = field(default_factory=dict)
    open_by_conversation: dict[str, str] = field(default_factory=dict)
    last_by_conversation: dict[str, str] = field(default_factory=dict)
    ticket_by_message: dict[str, str] = field(default_factory=dict)
    last_agent_by_customer: dict[str, str] = field(default_factory=dict)
    # customer -> their latest ticket about a merge category (stolen funds, takeover)
    cases: dict[str, str] = field(default_factory=dict)
    applied_agent_events: set[str] = field(default_factory=set)
    queue: TicketQueue = field(default_factory=TicketQueue)
    timers: list[tuple[datetime, str, str]] = field(default_factory=list)
    counts: Counter[tuple[str, Priority]] = field(default_factory=Counter)
    position: int = 0
    # Who can be offered anything right now, kept as loads and presence change, so routing
    # looks at agents with room instead of all of them: channel -> online agents with spare
    # capacity there, and the online agents with the security skill (emergency slots).
    spare: dict[str, set[str]] = field(default_factory=dict)
    security: set[str] = field(default_factory=set)
    # New (and re-prioritised) tickets of the current batch, routed together in priority
    # order at its end or before the next agent/SLA input, so a batch spanning partitions
    # never offers a P3 before a P2 that came in the same batch. They wait in `queue`
    # meanwhile, so capacity freed within the batch sees them too.
    unrouted: dict[str, str | None] = field(default_factory=dict)
    _handled_at: dict[str, datetime] = field(default_factory=dict)

    # -- loading -----------------------------------------------------------------

    def add_agent(self, a: AgentState) -> None:
        self.agents[a.agent_id] = a
        self._track(a)
        if a.requeue_due_at is not None:
            heapq.heappush(self.timers, (a.requeue_due_at, REQUEUE, a.agent_id))

    def add_ticket(self, t: Ticket) -> None:
        """Index a stored ticket (at start-up or takeover)."""
        self.tickets[t.ticket_id] = t
        self.counts[(t.state, t.priority)] += 1
        for m in t.message_ids:
            self.ticket_by_message[m] = t.ticket_id
        for c in t.conversation_ids:
            known = self.tickets.get(self.last_by_conversation.get(c, ""))
            if known is None or known.updated_at <= t.updated_at:
                self.last_by_conversation[c] = t.ticket_id
            if t.state in OPEN_STATES:
                self.open_by_conversation[c] = t.ticket_id
        if t.state == "queued":
            self._enqueue(t)
        if t.state == "offered" and t.offer_expires_at is not None:
            heapq.heappush(self.timers, (t.offer_expires_at, OFFER, t.ticket_id))
        self._index_case(t)
        if t.handled_by is not None and t.handled_at is not None:
            self._handled(t.customer_id, t.handled_by, t.handled_at)

    def _handled(self, customer_id: str, agent_id: str, at: datetime) -> None:
        seen = self._handled_at.get(customer_id)
        if seen is None or seen <= at:
            self.last_agent_by_customer[customer_id] = agent_id
            self._handled_at[customer_id] = at

    def _index_case(self, t: Ticket) -> None:
        if t.category not in self.policy.case_merge.categories or t.case_reported_at is None:
            return
        known = self.tickets.get(self.cases.get(t.customer_id, ""))
        # The latest report wins; the id breaks ties so a rebuilt state chooses the same.
        if (
            known is None
            or known.case_reported_at is None
            or (known.case_reported_at, known.ticket_id) <= (t.case_reported_at, t.ticket_id)
        ):
            self.cases[t.customer_id] = t.ticket_id

    def reconcile_loads(self) -> dict[str, AgentState]:
        """Make every agent's load what its tickets say; the agents that were corrected."""
        held: dict[str, Counter[str]] = {a: Counter() for a in self.agents}
        ids: dict[str, set[str]] = {a: set() for a in self.agents}
        for t in self.tickets.values():
            if t.state in HOLDS_CAPACITY and t.agent_id in held:
                held[t.agent_id][t.channel] += 1
                ids[t.agent_id].add(t.ticket_id)
        fixed: dict[str, AgentState] = {}
        for aid, agent in self.agents.items():
            load = {ch: n for ch, n in held[aid].items() if n}
            if {k: v for k, v in agent.load.items() if v} != load or agent.tickets != ids[aid]:
                agent.load, agent.tickets = load, ids[aid]
                fixed[aid] = agent
                self._track(agent)
        return fixed

    def _track(self, agent: AgentState) -> None:
        online = agent.presence == "online"
        for ch in CHANNELS:
            room = self.spare.setdefault(ch, set())
            if online and agent.spare(ch) > 0:
                room.add(agent.agent_id)
            else:
                room.discard(agent.agent_id)
        if online and agent.profile.security:
            self.security.add(agent.agent_id)
        else:
            self.security.discard(agent.agent_id)

    # -- bookkeeping -------------------------------------------------------------

    def _enqueue(self, t: Ticket) -> None:
        key = queue_key(
            t.priority,
            t.customer_tier,
            t.waiting_since.timestamp(),
            self.policy,
            sla_risk=t.sla_risk,
            ticket_id=t.ticket_id,
        )
        self.queue.push(t.ticket_id, t.klass(), key, t.priority, t.waiting_since.timestamp())

    def _set_state(self, t: Ticket, state: str) -> None:
        if t.state == state:
            return
        self.counts[(t.state, t.priority)] -= 1
        self.counts[(state, t.priority)] += 1
        if t.state == "queued":
            self.queue.remove(t.ticket_id)
        t.state = state
        if state == "queued":
            self._enqueue(t)

    def _set_priority(self, t: Ticket, priority: Priority) -> None:
        if t.priority == priority:
            return
        self.counts[(t.state, t.priority)] -= 1
        self.counts[(t.state, priority)] += 1
        t.priority = priority
        self._rerank(t)

    def _rerank(self, t: Ticket) -> None:
        if t.state == "queued":
            self._enqueue(t)

    def _emit(
        self,
        ch: Changes,
        t: Ticket,
        event: TicketEventName,
        now: datetime,
        *,
        message_id: str | None = None,
        reasons: tuple[str, ...] | None = None,
        agent_id: str | None = None,
    ) -> None:
        t.sequence += 1
        self.position += 1
        t.position = self.position
        t.updated_at = now
        ch.tickets[t.ticket_id] = t
        ch.events.append(
            TicketEvent(
                ticket_id=t.ticket_id,
                event=event,
                priority=t.priority,
                category=t.category,
                channel=t.channel,
                customer_id=t.customer_id,
                customer_tier=t.customer_tier,
                agent_id=agent_id if agent_id is not None else t.agent_id,
                language=t.language,
                at=now,
                reasons=reasons if reasons is not None else tuple(t.reasons),
                message_id=message_id,
                conversation_id=t.conversation_ids[0] if t.conversation_ids else None,
                conversation_ids=tuple(t.conversation_ids),
                state=t.state,
                opened_at=t.opened_at,
                sequence=t.sequence,
                position=self.position,
                pool="supervisor" if t.pool == "supervisor" else "general",
                emergency=t.emergency,
                offer_expires_at=t.offer_expires_at if event == "offered" else None,
            )
        )

    def waiting(self) -> list[Ticket]:
        """Waiting tickets, best first."""
        return [self.tickets[tid] for tid in self.queue.ordered()]

    # -- messages ----------------------------------------------------------------

    def on_message(self, msg: MessageReceived, now: datetime, *, defer: bool = False) -> Changes:
        """Apply one message. With `defer`, routing waits for `route_deferred`."""
        ch = Changes()
        if msg.message_id in self.ticket_by_message:
            return ch  # redelivered: already applied
        open_id = self.open_by_conversation.get(msg.conversation_id)
        if open_id is not None:
            self._add_message(ch, self.tickets[open_id], msg, now, (), defer)
            return ch
        case = self._case_of(msg, now)
        if case is not None:
            self.last_by_conversation[msg.conversation_id] = case.ticket_id
            channels = sorted({case.channel, msg.channel})
            why = (
                f"same customer reported {msg.category} in another conversation "
                f"({' and '.join(channels)}) within {self.policy.case_merge.window_s:.0f}s: "
                "one case, conversations linked"
            )
            if case.state == "resolved":
                self._reopen(ch, case, msg, now, defer, why)
                return ch
            self.open_by_conversation[msg.conversation_id] = case.ticket_id
            case.reasons.append(why)
            self._add_message(ch, case, msg, now, (why,), defer)
            return ch
        last = self.tickets.get(self.last_by_conversation.get(msg.conversation_id, ""))
        if (
            last is not None
            and last.state == "resolved"
            and last.resolved_at is not None
            and (now - last.resolved_at).total_seconds() <= self.policy.reopen_window_s
        ):
            self._reopen(ch, last, msg, now, defer)
            return ch
        priority, reasons = prioritize(msg.category, msg.customer_tier, self.policy)
        t = Ticket(
            ticket_id=ticket_id_for(msg.message_id),
            customer_id=msg.customer_id,
            customer_tier=msg.customer_tier,
            channel=msg.channel,
            category=msg.category,
            priority=priority,
            language=msg.language,
            state="queued",
            opened_at=now,
            updated_at=now,
            waiting_since=now,
            reasons=[*reasons, *msg.reasons[:5]],
            message_at=msg.received_at,
            routed=False,
        )
        self._join(t, msg, now)
        self.tickets[t.ticket_id] = t
        self.counts[(t.state, t.priority)] += 1
        self._enqueue(t)
        self.open_by_conversation[msg.conversation_id] = t.ticket_id
        self.last_by_conversation[msg.conversation_id] = t.ticket_id
        self._emit(ch, t, "opened", now, message_id=msg.message_id)
        self._route_or_defer(ch, t, now, msg.message_id, defer)
        return ch

    def _add_message(
        self,
        ch: Changes,
        t: Ticket,
        msg: MessageReceived,
        now: datetime,
        reasons: tuple[str, ...],
        defer: bool,
    ) -> None:
        self._join(t, msg, now)
        if t.state == "waiting_on_customer":
            self._set_state(t, "assigned")
            self._emit(ch, t, "customer_replied", now, message_id=msg.message_id)
        else:
            self._emit(
                ch, t, "message_added", now, message_id=msg.message_id, reasons=reasons or None
            )
        self._raise_priority(ch, t, msg, now, defer)

    def _case_of(self, msg: MessageReceived, now: datetime) -> Ticket | None:
        """The customer's ticket about the same emergency reported within the window
        (open, or resolved since: the case is reopened)."""
        merge = self.policy.case_merge
        if msg.category not in merge.categories:
            return None
        t = self.tickets.get(self.cases.get(msg.customer_id, ""))
        if (
            t is None
            or t.case_reported_at is None
            or (now - t.case_reported_at).total_seconds() > merge.window_s
        ):
            return None
        return t

    def _reopen(
        self,
        ch: Changes,
        t: Ticket,
        msg: MessageReceived,
        now: datetime,
        defer: bool,
        why: str | None = None,
    ) -> None:
        self._join(t, msg, now)
        priority, reasons = prioritize(t.category, t.customer_tier, self.policy)
        self._set_priority(t, priority)
        t.reasons = [*reasons, why] if why else list(reasons)
        t.agent_id = None
        t.resolved_at = None
        t.waiting_since = now
        t.message_at = msg.received_at
        t.offered_at = t.accepted_at = t.offer_expires_at = None
        t.passed_by, t.pool = [], "general"
        t.sla_risk = t.emergency = t.escalated = False
        t.routed = False
        self._set_state(t, "queued")
        for c in t.conversation_ids:
            if self.last_by_conversation.get(c) == t.ticket_id:
                self.open_by_conversation[c] = t.ticket_id
        self._emit(ch, t, "reopened", now, message_id=msg.message_id)
        self._raise_priority(ch, t, msg, now, defer)
        self._route_or_defer(ch, t, now, msg.message_id, defer)

    def _route_or_defer(
        self, ch: Changes, t: Ticket, now: datetime, message_id: str, defer: bool
    ) -> None:
        if defer:
            self.unrouted[t.ticket_id] = message_id
        else:
            self._route(ch, t, now, message_id=message_id)

    def route_deferred(self, now: datetime) -> Changes:
        """Route the batch's new tickets, best first (the queue's order)."""
        ch = Changes()
        pending = [self.tickets[tid] for tid in self.unrouted]
        pending.sort(
            key=lambda t: queue_key(
                t.priority,
                t.customer_tier,
                t.waiting_since.timestamp(),
                self.policy,
                sla_risk=t.sla_risk,
                ticket_id=t.ticket_id,
            )
        )
        for t in pending:
            if t.state == "queued":
                self._route(ch, t, now, message_id=self.unrouted[t.ticket_id])
        self.unrouted.clear()
        return ch

    def _join(self, t: Ticket, msg: MessageReceived, now: datetime) -> None:
        t.message_ids.append(msg.message_id)
        self.ticket_by_message[msg.message_id] = t.ticket_id
        if msg.conversation_id not in t.conversation_ids:
            t.conversation_ids.append(msg.conversation_id)
        if msg.category in self.policy.case_merge.categories:
            t.case_reported_at = now
            self._index_case(t)

    def _raise_priority(
        self, ch: Changes, t: Ticket, msg: MessageReceived, now: datetime, defer: bool
    ) -> None:
        priority, reasons = prioritize(msg.category, msg.customer_tier, self.policy)
        if PRIORITY_RANK[priority] < PRIORITY_RANK[t.priority]:
            # A later message revealed a worse problem.
            t.category = msg.category
            self._set_priority(t, priority)  # re-ranks: priority and class both changed
            t.reasons = [*reasons, f"raised by message {msg.message_id}"]
            self._emit(ch, t, "escalated", now, message_id=msg.message_id)
            self._index_case(t)
            if t.state == "queued" and t.routed:
                # Other agents may fit the new category, or a P1 an emergency slot.
                self._route_or_defer(ch, t, now, msg.message_id, defer)

    # -- matching ----------------------------------------------------------------

    def _decide(
        self, t: Ticket, choice: Choice, now: datetime, notes: tuple[tuple[str, str], ...] = ()
    ) -> None:
        """The decision record: why this priority, who was considered, who was chosen."""
        listed = list(choice.candidates)
        if len(listed) > CANDIDATES_LISTED:
            # A big team: the chosen agent and the first others by id, then a tally.
            rest = [c for c in listed if c[0] != choice.agent_id]
            chosen = [c for c in listed if c[0] == choice.agent_id]
            room = CANDIDATES_LISTED - len(chosen)
            listed, unlisted = chosen + rest[:room], rest[room:]
            eligible = sum(v == "eligible" for _, v in unlisted)
            listed.append(("*", f"{len(unlisted)} more: {eligible} eligible"))
        t.decision = {
            "at": now.isoformat(),
            "priority": t.priority,
            "priority_reasons": list(t.reasons),
            "pool": t.pool,
            "passed_by": list(t.passed_by),
            "candidates": [{"agent_id": a, "verdict": v} for a, v in [*listed, *notes]],
            "chosen": choice.agent_id,
            "emergency": choice.emergency,
            "why": choice.why,
        }

    def _route(
        self,
        ch: Changes,
        t: Ticket,
        now: datetime,
        message_id: str | None,
        *,
        besides: str | None = None,
    ) -> None:
        """Offer a waiting ticket to the best eligible agent, or leave it waiting.

        `besides`: the agent who just passed on it is not a candidate; that agent's freed
        capacity is drained next and takes the best waiting ticket, this one included.
        """
        ids = self.spare.get(t.channel, set())
        if t.priority in self.policy.emergency.priorities:
            ids = ids | self.security
        considered = [self.agents[a] for a in sorted(ids) if a != besides]
        choice = choose_agent(
            considered,
            t.need(),
            self.policy,
            self.last_agent_by_customer.get(t.customer_id),
            t.passed_by,
        )
        notes: list[tuple[str, str]] = []
        if besides is not None:
            notes.append((besides, "just passed on it: the best waiting ticket comes first"))
        others = len(self.agents) - len(considered) - len(notes)
        if others > 0:
            notes.append(("*", f"{others} more offline or without {t.channel} capacity"))
        self._decide(t, choice, now, tuple(notes))
        if choice.agent_id is None:
            if not t.routed:
                t.routed = True
                self._emit(ch, t, "queued", now, message_id=message_id, reasons=(choice.why,))
            else:
                ch.tickets[t.ticket_id] = t  # the decision record changed
            return
        agent = self.agents[choice.agent_id]
        self._give(ch, t, agent, now, message_id, choice.why, emergency=choice.emergency)

    def _give(
        self,
        ch: Changes,
        t: Ticket,
        agent: AgentState,
        now: datetime,
        message_id: str | None,
        why: str,
        *,
        emergency: bool,
    ) -> None:
        agent.load[t.channel] = agent.load.get(t.channel, 0) + 1
        agent.tickets.add(t.ticket_id)
        self._track(agent)
        agent.last_assigned_at = now
        ch.agents[agent.agent_id] = agent
        t.agent_id = agent.agent_id
        t.emergency = emergency
        t.routed = True
        if t.offered_at is None:
            t.offered_at = now
            if t.message_at is not None:
                latency = max(0.0, (now - t.message_at).total_seconds())
                ch.timings.append(("offer", t.priority, t.channel, latency))
        if agent.profile.auto_accept:
            self._set_state(t, "assigned")
            self._accepted(ch, t, now)
            self._emit(ch, t, "assigned", now, message_id=message_id, reasons=(why,))
        else:
            self._set_state(t, "offered")
            t.offer_expires_at = now + timedelta(seconds=self.policy.offer_timeout_s[t.channel])
            heapq.heappush(self.timers, (t.offer_expires_at, OFFER, t.ticket_id))
            self._emit(ch, t, "offered", now, message_id=message_id, reasons=(why,))

    def _accepted(self, ch: Changes, t: Ticket, now: datetime) -> None:
        t.offer_expires_at = None
        t.passed_by = []
        if t.agent_id is not None:
            t.handled_by, t.handled_at = t.agent_id, now
            self._handled(t.customer_id, t.agent_id, now)
        if t.accepted_at is None:
            t.accepted_at = now
            if t.message_at is not None:
                latency = max(0.0, (now - t.message_at).total_seconds())
                ch.timings.append(("accept", t.priority, t.channel, latency))

    def _release(self, ch: Changes, t: Ticket) -> None:
        if t.agent_id is None:
            return
        agent = self.agents.get(t.agent_id)
        if agent is not None and t.ticket_id in agent.tickets:
            agent.tickets.discard(t.ticket_id)
            left = agent.load.get(t.channel, 0) - 1
            if left > 0:
                agent.load[t.channel] = left
            else:
                agent.load.pop(t.channel, None)
            self._track(agent)
            ch.agents[agent.agent_id] = agent
        t.emergency = False
        t.offer_expires_at = None

    def _unassign(
        self,
        ch: Changes,
        t: Ticket,
        now: datetime,
        event: TicketEventName,
        why: str,
        *,
        passed: bool,
    ) -> str | None:
        """Take the ticket back from its agent into the queue; returns that agent."""
        former = t.agent_id
        self._release(ch, t)
        t.agent_id = None
        if passed and former is not None:
            t.passed_by = [a for a in t.passed_by if a != former][-(PASSED_KEPT - 1) :]
            t.passed_by.append(former)
        self._set_state(t, "queued")
        self._emit(ch, t, event, now, reasons=(why,), agent_id=former)
        return former

    def _drain(
        self, ch: Changes, agent: AgentState, now: datetime, avoid: str | None = None
    ) -> None:
        """Give the agent the best waiting tickets it may take, until it can take none.

        `avoid`: a ticket the agent just passed on; another of the same priority comes
        first (a better one would anyway, and a worse one must not).
        """
        if agent.presence != "online":
            return
        emergency_ranks = {PRIORITY_RANK[p] for p in self.policy.emergency.priorities}
        needs: dict[ClassKey, bool] = {}

        def accepts(klass: ClassKey, key: QueueKey) -> bool:
            fits = needs.get(klass)
            if fits is None:
                pool, channel, category, language = klass
                need = Need(channel, category, language, "P4", pool)
                fits = needs[klass] = fit(agent.profile, agent.presence, need) is None
            if not fits:
                return False
            channel = klass[1]
            if agent.spare(channel) > 0:
                return True
            return (
                key[0] in emergency_ranks
                and agent.profile.security
                and agent.profile.capacity.get(channel, 0) > 0
                and agent.overflow() < self.policy.emergency.slots
            )

        while (tid := self.queue.best(accepts)) is not None:
            if tid == avoid:
                tid = self._instead(tid, accepts)
            avoid = None
            t = self.tickets[tid]
            emergency = agent.spare(t.channel) <= 0
            why = "best waiting ticket when capacity freed"
            if emergency:
                why = f"{t.priority} emergency slot beyond capacity (security agent); {why}"
            choice = Choice(agent.agent_id, why, ((agent.agent_id, "eligible"),), emergency)
            self._decide(t, choice, now)
            self._give(ch, t, agent, now, self.unrouted.get(tid), why, emergency=emergency)

    def _instead(self, tid: str, accepts: Callable[[ClassKey, QueueKey], bool]) -> str:
        """Another waiting ticket of the same priority the agent may take, else `tid`."""
        held = self.queue.live[tid]
        self.queue.remove(tid)
        other = self.queue.best(accepts)
        self.queue.push(tid, held.klass, held.key, held.priority, held.waiting_since_ts)
        if other is not None and self.queue.live[other].key[0] == held.key[0]:
            return other
        return tid

    def _route_all(self, ch: Changes, tickets: list[Ticket], now: datetime) -> None:
        """Route tickets back in the queue, best first."""
        tickets.sort(key=lambda t: self.queue.live[t.ticket_id].key)
        for t in tickets:
            if t.state == "queued":
                self._route(ch, t, now, None)

    # -- agents ------------------------------------------------------------------

    def on_profile(self, ev: AgentProfileUpdated, event_id: str, now: datetime) -> Changes:
        if event_id in self.applied_agent_events:
            return Changes()
        self.applied_agent_events.add(event_id)
        agent = self.agents.get(ev.agent_id)
        if agent is None:
            agent = AgentState(ev.agent_id, ev.profile, presence_since=now)
            self.agents[ev.agent_id] = agent
        else:
            agent.profile = ev.profile
        self._track(agent)
        ch = Changes()
        ch.agents[agent.agent_id] = agent
        # More capacity, skills or languages: the agent takes the best waiting work (the
        # batch's new tickets included), then the rest of the batch is routed.
        self._drain(ch, agent, now)
        ch.merge(self.route_deferred(now))
        return ch

    def on_presence(self, ev: AgentPresenceChanged, event_id: str, now: datetime) -> Changes:
        if event_id in self.applied_agent_events:
            return Changes()
        self.applied_agent_events.add(event_id)
        agent = self.agents.get(ev.agent_id)
        if agent is None:
            return self.route_deferred(now)
        if agent.presence != ev.status:
            agent.presence_since = now
        agent.presence = ev.status
        self._track(agent)
        ch = Changes()
        ch.agents[agent.agent_id] = agent
        if ev.status == "online":
            agent.requeue_due_at = None
            self._drain(ch, agent, now)
            ch.merge(self.route_deferred(now))
            return ch
        # The batch's new tickets are routed before the withdrawn offers compete with them.
        ch.merge(self.route_deferred(now))
        # Outstanding offers go back to the queue and on to someone else at once.
        withdrawn = [
            self.tickets[tid]
            for tid in sorted(agent.tickets)
            if self.tickets[tid].state == "offered"
        ]
        for t in withdrawn:
            self._unassign(ch, t, now, "offer_expired", f"agent {ev.status}", passed=False)
            ch.expired.append((t.channel, "agent_away"))
        self._route_all(ch, withdrawn, now)
        # Accepted work follows after a grace period, in case the agent is back soon.
        if agent.requeue_due_at is None and any(
            self.tickets[tid].state in ACCEPTED_WORK for tid in agent.tickets
        ):
            agent.requeue_due_at = now + timedelta(seconds=self.policy.away_grace_s)
            heapq.heappush(self.timers, (agent.requeue_due_at, REQUEUE, agent.agent_id))
        return ch

    def on_action(self, ev: AgentActionTaken, event_id: str, now: datetime) -> Changes:
        ch = self.route_deferred(now)  # the batch's new tickets first
        if event_id in self.applied_agent_events:
            return ch
        self.applied_agent_events.add(event_id)
        t = self.tickets.get(ev.ticket_id)
        refused = refusal(t.state if t else None, t.agent_id if t else None, ev.action, ev.agent_id)
        if refused is None and ev.action == "recategorize" and ev.category is None:
            refused = Refusal("conflict", "no category given")
        if t is None or refused is not None:
            self._reject(ch, t, ev, event_id, refused.reason if refused else "", now)
            return ch
        ch.outcomes[event_id] = ActionOutcome("accepted", t.ticket_id, ev.agent_id, ev.action, now)
        if ev.action == "recategorize":
            self._recategorize(ch, ev, now)
            return ch
        agent = self.agents.get(ev.agent_id)
        if ev.action in ("accept", "reply", "wait") and t.state == "offered":
            self._set_state(t, "assigned")
            self._accepted(ch, t, now)
            self._emit(ch, t, "accepted", now)
        if ev.action == "decline" and t.state == "offered":
            self._unassign(ch, t, now, "offer_expired", f"declined by {ev.agent_id}", passed=True)
            ch.expired.append((t.channel, "declined"))
            self._route(ch, t, now, None, besides=ev.agent_id)
            if agent is not None:
                self._drain(ch, agent, now, avoid=t.ticket_id)
        elif ev.action == "reply":
            self._set_state(t, "assigned")
            self._emit(ch, t, "agent_replied", now)
        elif ev.action == "wait" and t.state == "assigned":
            self._set_state(t, "waiting_on_customer")
            self._emit(ch, t, "waiting_on_customer", now)
        elif ev.action == "resolve":
            self._release(ch, t)
            self._set_state(t, "resolved")
            t.resolved_at = now
            for c in t.conversation_ids:
                if self.open_by_conversation.get(c) == t.ticket_id:
                    del self.open_by_conversation[c]
            self._emit(ch, t, "resolved", now)
            if agent is not None:
                self._drain(ch, agent, now)
        return ch

    def _reject(
        self,
        ch: Changes,
        t: Ticket | None,
        ev: AgentActionTaken,
        event_id: str,
        reason: str,
        now: datetime,
    ) -> None:
        """An action the ticket does not take: recorded, and told on the ticket's log.

        The event keeps the ticket's holder as `agent_id` (the SLA timers and notify
        follow that field); who was refused is in its reasons.
        """
        ch.outcomes[event_id] = ActionOutcome(
            "rejected", ev.ticket_id, ev.agent_id, ev.action, now, reason
        )
        if t is None:
            return  # no ticket, no log to tell it on: the outcome says it
        why = f"{ev.action} by {ev.agent_id} rejected: {reason}"
        self._emit(ch, t, "action_rejected", now, reasons=(why,))

    def _recategorize(self, ch: Changes, ev: AgentActionTaken, now: datetime) -> None:
        """An agent's correction: the category and priority change, the queue re-ranks."""
        t = self.tickets.get(ev.ticket_id)
        if t is None or ev.category is None or ev.category == t.category:
            return  # the same category again: accepted, nothing changes
        before = t.category
        priority, reasons = prioritize(ev.category, t.customer_tier, self.policy)
        if t.escalated:
            priority = raised(priority, self.policy.escalation.raise_levels)
        t.category = ev.category
        t.reasons = [*reasons, f"recategorized {before} → {ev.category} by {ev.agent_id}"]
        self._set_priority(t, priority)
        self._rerank(t)  # the class (category) changed even when the priority did not
        self._index_case(t)
        self._emit(
            ch,
            t,
            "recategorized",
            now,
            message_id=t.message_ids[0] if t.message_ids else None,
            agent_id=ev.agent_id,
        )
        if t.state == "queued" and t.routed:
            self._route(ch, t, now, None)

    # -- SLA ---------------------------------------------------------------------

    def on_sla(self, ev: SlaEvent, now: datetime) -> Changes:
        """A warning ranks a waiting ticket ahead; a breach escalates it."""
        ch = self.route_deferred(now)
        t = self.tickets.get(ev.ticket_id)
        if t is None or t.state not in OPEN_STATES:
            return ch
        if ev.event == "warning" and not t.sla_risk:
            t.sla_risk = True
            t.reasons.append(f"SLA {ev.metric} warning: ahead of others waiting as long")
            self._rerank(t)
            ch.tickets[t.ticket_id] = t
        elif ev.event == "breached" and ev.timer_id not in t.breaches:
            t.breaches.append(ev.timer_id)
            self._escalate(ch, t, f"SLA {ev.metric} breached", now)
        return ch

    def _escalate(self, ch: Changes, t: Ticket, cause: str, now: datetime) -> None:
        esc = self.policy.escalation
        before = t.priority
        self._set_priority(t, raised(before, esc.raise_levels))
        t.escalated = True
        why = f"{cause}: {before} -> {t.priority}" if t.priority != before else cause
        to_pool = t.priority in esc.supervisor_pool and t.pool != "supervisor"
        if to_pool:
            t.pool = "supervisor"
            self._rerank(t)
            why += "; moved to the supervisor pool"
        t.reasons.append(why)
        self._emit(ch, t, "escalated", now, reasons=(why,))
        holder = self.agents.get(t.agent_id or "")
        if t.state == "queued":
            self._route(ch, t, now, None)
        elif t.pool == "supervisor" and holder is not None and not holder.profile.supervisor:
            if t.state == "offered":
                self._unassign(ch, t, now, "offer_expired", why, passed=False)
                ch.expired.append((t.channel, "escalated"))
                self._route(ch, t, now, None)
                self._drain(ch, holder, now)
                return
            supervisors = [a for a in self.agents.values() if a.profile.supervisor]
            choice = choose_agent(supervisors, t.need(), self.policy)
            if choice.agent_id is None:
                # Work in progress stays where it is rather than wait for a supervisor.
                t.reasons.append(f"no supervisor free: stays with {holder.agent_id}")
                ch.tickets[t.ticket_id] = t
                return
            self._unassign(ch, t, now, "reassigned", why, passed=False)
            self._decide(t, choice, now)
            supervisor = self.agents[choice.agent_id]
            self._give(ch, t, supervisor, now, None, choice.why, emergency=choice.emergency)
            self._drain(ch, holder, now)

    # -- the clock ---------------------------------------------------------------

    def next_due(self) -> datetime | None:
        return self.timers[0][0] if self.timers else None

    def tick(self, now: datetime) -> Changes:
        """Fire what is due by `now`: expired offers, requeues of away agents' work."""
        ch = self.route_deferred(now)
        while self.timers and self.timers[0][0] <= now:
            due, kind, ident = heapq.heappop(self.timers)
            if kind == OFFER:
                t = self.tickets.get(ident)
                if t is None or t.state != "offered" or t.offer_expires_at != due:
                    continue  # accepted, declined or re-offered since: a stale entry
                timeout = self.policy.offer_timeout_s[t.channel]
                former = self._unassign(
                    ch, t, now, "offer_expired", f"not accepted within {timeout:g}s", passed=True
                )
                ch.expired.append((t.channel, "timeout"))
                self._route(ch, t, now, None, besides=former)
                agent = self.agents.get(former or "")
                if agent is not None:
                    self._drain(ch, agent, now, avoid=t.ticket_id)
            elif kind == REQUEUE:
                agent = self.agents.get(ident)
                if agent is None or agent.presence == "online" or agent.requeue_due_at != due:
                    continue
                self._requeue_work(ch, agent, now)
        return ch

    def _requeue_work(self, ch: Changes, agent: AgentState, now: datetime) -> None:
        agent.requeue_due_at = None
        ch.agents[agent.agent_id] = agent
        why = (
            f"agent {agent.presence} for over {self.policy.away_grace_s:g}s: "
            "back to the queue with its original age"
        )
        work = [
            self.tickets[tid]
            for tid in sorted(agent.tickets)
            if self.tickets[tid].state in ACCEPTED_WORK
        ]
        for t in work:
            self._unassign(ch, t, now, "reassigned", why, passed=False)
        self._route_all(ch, work, now)
