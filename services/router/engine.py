"""The routing engine: tickets and agents in memory, every decision a function of
(state, input, now) that returns the ticket events it caused. No I/O here.

Ticket states: queued -> offered -> assigned -> (waiting_on_customer <-> assigned) -> resolved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.router.priority import RoutingPolicy, prioritize, queue_key
from services.router.selection import AgentState, Need, choose_agent
from shared.contracts.agents import (
    AgentActionTaken,
    AgentPresenceChanged,
    AgentProfileUpdated,
)
from shared.contracts.common import Category, Channel, Priority
from shared.contracts.messages import MessageReceived
from shared.contracts.tickets import TicketEvent, TicketEventName
from shared.ids import stable_id

OPEN_STATES = frozenset({"queued", "offered", "assigned", "waiting_on_customer"})
HOLDS_CAPACITY = frozenset({"offered", "assigned", "waiting_on_customer"})


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
    waiting_since: datetime
    agent_id: str | None = None
    conversation_ids: list[str] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    decision: dict[str, Any] = field(default_factory=dict)
    sequence: int = 0
    resolved_at: datetime | None = None

    def need(self) -> Need:
        return Need(self.channel, self.category, self.language)


@dataclass
class Changes:
    """What one input changed: documents to store and events to publish."""

    events: list[TicketEvent] = field(default_factory=list)
    tickets: dict[str, Ticket] = field(default_factory=dict)
    agents: dict[str, AgentState] = field(default_factory=dict)

    def merge(self, other: Changes) -> None:
        self.events.extend(other.events)
        self.tickets.update(other.tickets)
        self.agents.update(other.agents)


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
    applied_agent_events: set[str] = field(default_factory=set)
    # New tickets of the current batch, routed together in priority order at its end, so a
    # batch spanning partitions never offers a P3 before a P2 that came in the same batch.
    unrouted: dict[str, str | None] = field(default_factory=dict)

    # -- loading -----------------------------------------------------------------

    def add_ticket(self, t: Ticket) -> None:
        self.tickets[t.ticket_id] = t
        for m in t.message_ids:
            self.ticket_by_message[m] = t.ticket_id
        for c in t.conversation_ids:
            self.last_by_conversation[c] = t.ticket_id
            if t.state in OPEN_STATES:
                self.open_by_conversation[c] = t.ticket_id
            elif self.open_by_conversation.get(c) == t.ticket_id:
                del self.open_by_conversation[c]

    # -- events ------------------------------------------------------------------

    def _emit(
        self,
        ch: Changes,
        t: Ticket,
        event: TicketEventName,
        now: datetime,
        *,
        message_id: str | None = None,
        reasons: tuple[str, ...] | None = None,
    ) -> None:
        t.sequence += 1
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
                agent_id=t.agent_id,
                language=t.language,
                at=now,
                reasons=reasons if reasons is not None else tuple(t.reasons),
                message_id=message_id,
                conversation_id=t.conversation_ids[0] if t.conversation_ids else None,
                state=t.state,
                opened_at=t.opened_at,
                sequence=t.sequence,
            )
        )

    # -- messages ----------------------------------------------------------------

    def on_message(self, msg: MessageReceived, now: datetime, *, defer: bool = False) -> Changes:
        """Apply one message. With `defer`, routing waits for `route_deferred`."""
        ch = Changes()
        if msg.message_id in self.ticket_by_message:
            return ch  # redelivered: already applied
        open_id = self.open_by_conversation.get(msg.conversation_id)
        if open_id is not None:
            t = self.tickets[open_id]
            self._join(t, msg)
            if t.state == "waiting_on_customer":
                t.state = "assigned"
                self._emit(ch, t, "customer_replied", now, message_id=msg.message_id)
            else:
                self._emit(ch, t, "message_added", now, message_id=msg.message_id)
            self._raise_priority(ch, t, msg, now)
            return ch
        last_id = self.last_by_conversation.get(msg.conversation_id)
        last = self.tickets.get(last_id) if last_id else None
        if (
            last is not None
            and last.resolved_at is not None
            and (now - last.resolved_at).total_seconds() <= self.policy.reopen_window_s
        ):
            self._join(last, msg)
            last.state = "queued"
            last.agent_id = None
            last.resolved_at = None
            last.waiting_since = now
            self.open_by_conversation[msg.conversation_id] = last.ticket_id
            self._emit(ch, last, "reopened", now, message_id=msg.message_id)
            self._route_or_defer(ch, last, now, msg.message_id, defer)
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
        )
        self._join(t, msg)
        self.tickets[t.ticket_id] = t
        self.open_by_conversation[msg.conversation_id] = t.ticket_id
        self.last_by_conversation[msg.conversation_id] = t.ticket_id
        self._emit(ch, t, "opened", now, message_id=msg.message_id)
        self._route_or_defer(ch, t, now, msg.message_id, defer)
        return ch

    def _route_or_defer(
        self, ch: Changes, t: Ticket, now: datetime, message_id: str, defer: bool
    ) -> None:
        if defer:
            self.unrouted[t.ticket_id] = message_id
        else:
            self._route(ch, t, now, message_id=message_id)

    def route_deferred(self, now: datetime) -> Changes:
        """Route the batch's new tickets, best first (priority, tier, longest waiting)."""
        ch = Changes()
        pending = [self.tickets[tid] for tid in self.unrouted]
        pending.sort(
            key=lambda t: queue_key(
                t.priority, t.customer_tier, t.waiting_since.timestamp(), self.policy
            )
        )
        for t in pending:
            if t.state == "queued" and t.agent_id is None:
                self._route(ch, t, now, message_id=self.unrouted[t.ticket_id])
        self.unrouted.clear()
        return ch

    def _join(self, t: Ticket, msg: MessageReceived) -> None:
        t.message_ids.append(msg.message_id)
        self.ticket_by_message[msg.message_id] = t.ticket_id
        if msg.conversation_id not in t.conversation_ids:
            t.conversation_ids.append(msg.conversation_id)

    def _raise_priority(self, ch: Changes, t: Ticket, msg: MessageReceived, now: datetime) -> None:
        priority, reasons = prioritize(msg.category, msg.customer_tier, self.policy)
        if priority < t.priority:  # "P1" < "P2": a later message revealed a worse problem
            t.priority, t.category = priority, msg.category
            t.reasons = [*reasons, f"raised by message {msg.message_id}"]
            self._emit(ch, t, "escalated", now, message_id=msg.message_id)

    # -- matching ----------------------------------------------------------------

    def _route(self, ch: Changes, t: Ticket, now: datetime, message_id: str | None) -> None:
        choice = choose_agent(
            self.agents.values(), t.need(), self.last_agent_by_customer.get(t.customer_id)
        )
        t.decision = {
            "at": now.isoformat(),
            "priority": t.priority,
            "priority_reasons": list(t.reasons),
            "candidates": [{"agent_id": a, "verdict": v} for a, v in choice.candidates],
            "chosen": choice.agent_id,
            "why": choice.why,
        }
        if choice.agent_id is None:
            t.state = "queued"
            self._emit(ch, t, "queued", now, message_id=message_id, reasons=(choice.why,))
            return
        self._give(ch, t, self.agents[choice.agent_id], now, message_id, choice.why)

    def _give(
        self,
        ch: Changes,
        t: Ticket,
        agent: AgentState,
        now: datetime,
        message_id: str | None,
        why: str,
    ) -> None:
        agent.load[t.channel] = agent.load.get(t.channel, 0) + 1
        agent.tickets.add(t.ticket_id)
        agent.last_assigned_at = now
        ch.agents[agent.agent_id] = agent
        t.agent_id = agent.agent_id
        self.last_agent_by_customer[t.customer_id] = agent.agent_id
        if agent.profile.auto_accept:
            t.state = "assigned"
            self._emit(ch, t, "assigned", now, message_id=message_id, reasons=(why,))
        else:
            t.state = "offered"
            self._emit(ch, t, "offered", now, message_id=message_id, reasons=(why,))

    def _release(self, ch: Changes, t: Ticket) -> None:
        if t.agent_id is None:
            return
        agent = self.agents.get(t.agent_id)
        if agent is not None and t.ticket_id in agent.tickets:
            agent.tickets.discard(t.ticket_id)
            agent.load[t.channel] = max(0, agent.load.get(t.channel, 0) - 1)
            ch.agents[agent.agent_id] = agent

    def queued(self) -> list[Ticket]:
        waiting = [t for t in self.tickets.values() if t.state == "queued"]
        waiting.sort(
            key=lambda t: queue_key(
                t.priority, t.customer_tier, t.waiting_since.timestamp(), self.policy
            )
        )
        return waiting

    def _drain(self, ch: Changes, agent: AgentState, now: datetime) -> None:
        """Offer the best waiting tickets this agent can take, until it is full."""
        from services.router.selection import ineligibility

        for t in self.queued():
            if ineligibility(agent, t.need()) is not None:
                continue
            t.decision = {
                "at": now.isoformat(),
                "priority": t.priority,
                "priority_reasons": list(t.reasons),
                "candidates": [{"agent_id": agent.agent_id, "verdict": "eligible"}],
                "chosen": agent.agent_id,
                "why": "best waiting ticket when capacity freed",
            }
            self._give(ch, t, agent, now, None, "best waiting ticket when capacity freed")

    # -- agents ------------------------------------------------------------------

    def on_profile(self, ev: AgentProfileUpdated, event_id: str, now: datetime) -> Changes:
        ch = Changes()
        if event_id in self.applied_agent_events:
            return ch
        self.applied_agent_events.add(event_id)
        agent = self.agents.get(ev.agent_id)
        if agent is None:
            agent = AgentState(ev.agent_id, ev.profile)
            self.agents[ev.agent_id] = agent
        else:
            agent.profile = ev.profile
        ch.agents[agent.agent_id] = agent
        self._drain(ch, agent, now)
        return ch

    def on_presence(self, ev: AgentPresenceChanged, event_id: str, now: datetime) -> Changes:
        ch = Changes()
        if event_id in self.applied_agent_events:
            return ch
        self.applied_agent_events.add(event_id)
        agent = self.agents.get(ev.agent_id)
        if agent is None:
            return ch
        agent.presence = ev.status
        ch.agents[agent.agent_id] = agent
        if ev.status == "online":
            self._drain(ch, agent, now)
        else:
            # Outstanding offers go back to the queue and on to someone else at once.
            for tid in sorted(agent.tickets):
                t = self.tickets[tid]
                if t.state == "offered":
                    self._release(ch, t)
                    t.agent_id = None
                    t.state = "queued"
                    self._emit(ch, t, "offer_expired", now, reasons=(f"agent {ev.status}",))
                    self._route(ch, t, now, None)
        return ch

    def on_action(self, ev: AgentActionTaken, event_id: str, now: datetime) -> Changes:
        ch = Changes()
        if event_id in self.applied_agent_events:
            return ch
        self.applied_agent_events.add(event_id)
        t = self.tickets.get(ev.ticket_id)
        if t is None or t.agent_id != ev.agent_id or t.state not in HOLDS_CAPACITY:
            return ch  # stale or foreign action: nothing to do
        agent = self.agents.get(ev.agent_id)
        if ev.action == "accept" and t.state == "offered":
            t.state = "assigned"
            self._emit(ch, t, "accepted", now)
        elif ev.action == "decline" and t.state == "offered":
            self._release(ch, t)
            t.agent_id = None
            t.state = "queued"
            self._emit(ch, t, "offer_expired", now, reasons=("declined",))
            self._route(ch, t, now, None)
            if agent is not None:
                self._drain(ch, agent, now)
        elif ev.action == "reply":
            if t.state == "offered":
                t.state = "assigned"
                self._emit(ch, t, "accepted", now)
            t.state = "assigned"
            self._emit(ch, t, "agent_replied", now)
        elif ev.action == "wait":
            t.state = "waiting_on_customer"
            self._emit(ch, t, "waiting_on_customer", now)
        elif ev.action == "resolve":
            self._release(ch, t)
            t.state = "resolved"
            t.resolved_at = now
            for c in t.conversation_ids:
                if self.open_by_conversation.get(c) == t.ticket_id:
                    del self.open_by_conversation[c]
            self._emit(ch, t, "resolved", now)
            if agent is not None:
                self._drain(ch, agent, now)
        return ch
