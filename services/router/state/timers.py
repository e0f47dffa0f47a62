"""The clock: offers that expire, and the accepted work of agents away for longer than
the grace period going back to the queue. Fired by `tick(now)` on the lease holder like
any other input. No I/O here.
"""

from __future__ import annotations

import heapq
from datetime import datetime

from services.router.selection import AgentState
from services.router.state.matching import Matching
from services.router.state.model import ACCEPTED_WORK, OFFER, REQUEUE, Changes


class Timers(Matching):
    """`tick(now)`: fire the timers due by `now`; `next_due` for the clock."""

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
