"""SLA inputs: a warning ranks a waiting ticket ahead; a breach escalates it (priority
raised, maybe to the supervisor pool, work moved to a supervisor). No I/O here.
"""

from __future__ import annotations

from datetime import datetime

from services.router.priority import raised
from services.router.selection import choose_agent
from services.router.state.matching import Matching
from services.router.state.model import OPEN_STATES, Changes, Ticket
from shared.contracts.sla import SlaEvent


class SlaInputs(Matching):
    """`on_sla`: the SLA service's warnings and breaches."""

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
