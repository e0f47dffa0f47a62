"""The router state's data and its indexes: loading stored tickets and agents (at start-up
or takeover), and the bookkeeping every change goes through (state counts, the queue,
who has room, the emitted event). No I/O here.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from services.router.actions import HOLDS_CAPACITY
from services.router.priority import RoutingPolicy, queue_key
from services.router.queue import TicketQueue
from services.router.selection import AgentState
from services.router.state.model import (
    OFFER,
    OPEN_STATES,
    REQUEUE,
    Changes,
    Ticket,
)
from shared.contracts.common import CHANNELS, Priority
from shared.contracts.tickets import TicketEvent, TicketEventName


@dataclass
class Indexes:
    """Every ticket and agent, and the indexes kept up to date with them."""

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
    # customer -> (when, ticket id) of the last acceptance: the id breaks ties (two tickets
    # of one customer accepted in one step) so a state rebuilt from its documents, which
    # sees them in another order, chooses the same agent.
    _handled_at: dict[str, tuple[datetime, str]] = field(default_factory=dict)

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
            self._handled(t, t.handled_by, t.handled_at)

    def _handled(self, t: Ticket, agent_id: str, at: datetime) -> None:
        seen = self._handled_at.get(t.customer_id)
        if seen is None or seen <= (at, t.ticket_id):
            self.last_agent_by_customer[t.customer_id] = agent_id
            self._handled_at[t.customer_id] = (at, t.ticket_id)

    def _index_case(self, t: Ticket) -> None:
        # Indexed by its last report whatever its category is now (an agent may have
        # recategorized it since): `_case_of` checks the category, so a state rebuilt from
        # its documents indexes the same ticket.
        if t.case_reported_at is None:
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
                possible_urgent=t.possible_urgent,
            )
        )

    def waiting(self) -> list[Ticket]:
        """Waiting tickets, best first."""
        return [self.tickets[tid] for tid in self.queue.ordered()]
