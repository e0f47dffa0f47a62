"""Agent inputs: profile updates and presence changes free or withdraw capacity; actions
(accept, decline, reply, wait, resolve, recategorize) move their tickets on or are
rejected with the reason. No I/O here.
"""

from __future__ import annotations

import heapq
from datetime import datetime, timedelta

from services.router.actions import ActionOutcome, Refusal, refusal
from services.router.priority import prioritize, raised
from services.router.selection import AgentState
from services.router.state.matching import Matching
from services.router.state.model import ACCEPTED_WORK, REQUEUE, Changes, Ticket
from shared.contracts.agents import (
    AgentActionTaken,
    AgentPresenceChanged,
    AgentProfileUpdated,
)


class AgentInputs(Matching):
    """`on_profile`, `on_presence`, `on_action`: what agents do and say about themselves."""

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
        t.possible_urgent = None  # an agent read it: the category says what it is
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
