"""Matching waiting tickets and agents: a ticket to the best eligible agent (`_route`),
an agent with freed capacity to the best waiting tickets (`_drain`), and the decision
record of each choice. No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from services.router.priority import PRIORITY_RANK, QueueKey, queue_key
from services.router.queue import ClassKey
from services.router.selection import AgentState, Choice, Need, choose_agent, fit
from services.router.state.assignment import Assignment
from services.router.state.model import CANDIDATES_LISTED, Changes, Ticket


class Matching(Assignment):
    """Who gets which waiting ticket, and the record of why."""

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
