"""Giving a ticket to an agent and taking it back: the agent's load, the offer timer,
the offer and accept latencies. No I/O here.
"""

from __future__ import annotations

import heapq
from datetime import datetime, timedelta

from services.router.selection import AgentState
from services.router.state.indexes import Indexes
from services.router.state.model import OFFER, PASSED_KEPT, Changes, Ticket
from shared.contracts.tickets import TicketEventName


class Assignment(Indexes):
    """A ticket given to an agent (offered or assigned), or taken back into the queue."""

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
            self._handled(t, t.agent_id, now)
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
