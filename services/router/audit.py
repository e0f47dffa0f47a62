"""Replay the ticket log and check the router's promises, event by event.

`support.tickets` is the router's decision log: read in `position` order it shows every
decision in the order it was made. Given the agents' profiles and presence, `Auditor`
rebuilds tickets and agents' loads from the events alone and reports every broken rule:

- per ticket, `sequence` is gap-free and every event is a legal transition (one routing
  decision per opening: `queued`, `offered` or `assigned`; an offer is accepted, expires
  or is declined before the ticket goes anywhere else);
- no agent is given work beyond the channel's capacity, except one emergency slot per
  policy (P1, agents with the security skill);
- no ticket is offered to an agent while a higher-priority ticket that agent could have
  taken waits;
- `position` is gap-free across the whole log.

Used by the tests on random event sequences and on the real system's log; an operator
can run it over an exported log to answer "was anyone over capacity last night?".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from services.router.priority import PRIORITY_RANK, RoutingPolicy
from services.router.selection import Need, fit
from shared.contracts.agents import AgentProfile, Presence
from shared.contracts.common import Category, Channel, Priority
from shared.contracts.tickets import TicketEvent

HOLDING = frozenset({"offered", "assigned", "waiting_on_customer"})
ANNOTATIONS = frozenset({"message_added", "escalated", "recategorized", "action_rejected"})
# Told on a resolved ticket too: a correction, and an action refused because it is resolved.
AFTER_RESOLVED = frozenset({"recategorized", "action_rejected"})

ClassKey = tuple[str, Channel, Category, str]


@dataclass
class AgentView:
    profile: AgentProfile
    presence: Presence = "online"


@dataclass
class Replayed:
    """A ticket as its events tell it."""

    ticket_id: str
    state: str
    priority: Priority
    channel: Channel
    category: Category
    language: str
    pool: str
    sequence: int
    agent_id: str | None = None
    routed: bool = False
    openings: int = 1

    def klass(self) -> ClassKey:
        return (self.pool, self.channel, self.category, self.language)


@dataclass
class Auditor:
    policy: RoutingPolicy
    agents: dict[str, AgentView] = field(default_factory=dict)
    tickets: dict[str, Replayed] = field(default_factory=dict)
    load: dict[str, Counter[str]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    position: int | None = None
    events: int = 0
    gives: int = 0
    emergency_gives: int = 0
    contested: int = 0  # gives while a higher priority waited (that this agent could not take)
    # Waiting tickets per need class: (pool, channel, category, language) -> priority ranks
    _waiting: dict[ClassKey, Counter[int]] = field(default_factory=dict)

    def set_agent(
        self, agent_id: str, profile: AgentProfile | None = None, presence: Presence | None = None
    ) -> None:
        view = self.agents.get(agent_id)
        if view is None:
            if profile is None:
                return
            view = self.agents[agent_id] = AgentView(profile, "offline")
        if profile is not None:
            view.profile = profile
        if presence is not None:
            view.presence = presence

    def apply_all(self, events: Iterable[TicketEvent]) -> list[str]:
        for ev in events:
            self.apply(ev)
        return self.violations

    # -- bookkeeping -------------------------------------------------------------

    def _fail(self, ev: TicketEvent, what: str) -> None:
        self.violations.append(
            f"{ev.ticket_id}#{ev.sequence} {ev.event} (position {ev.position}): {what}"
        )

    def _wait(self, t: Replayed) -> None:
        self._waiting.setdefault(t.klass(), Counter())[PRIORITY_RANK[t.priority]] += 1

    def _unwait(self, t: Replayed) -> None:
        ranks = self._waiting.get(t.klass())
        if ranks is not None:
            ranks[PRIORITY_RANK[t.priority]] -= 1
            if ranks[PRIORITY_RANK[t.priority]] <= 0:
                del ranks[PRIORITY_RANK[t.priority]]

    def _set(self, t: Replayed, state: str) -> None:
        if t.state == "queued":
            self._unwait(t)
        t.state = state
        if state == "queued":
            self._wait(t)

    def _release(self, t: Replayed) -> None:
        if t.agent_id is not None:
            self.load.setdefault(t.agent_id, Counter())[t.channel] -= 1
        t.agent_id = None

    def _overflow(self, agent_id: str) -> int:
        cap = self.agents[agent_id].profile.capacity
        return sum(max(0, n - cap.get(ch, 0)) for ch, n in self.load.get(agent_id, {}).items())  # type: ignore[call-overload]

    # -- the rules ---------------------------------------------------------------

    def _could_take(self, agent_id: str, klass: ClassKey, rank: int) -> bool:
        view = self.agents[agent_id]
        pool, channel, category, language = klass
        need = Need(channel, category, language, "P4", pool)
        if fit(view.profile, view.presence, need) is not None:
            return False
        cap = view.profile.capacity.get(channel, 0)
        if self.load.get(agent_id, Counter())[channel] < cap:
            return True
        emergency = {PRIORITY_RANK[p] for p in self.policy.emergency.priorities}
        return (
            rank in emergency
            and view.profile.security
            and cap > 0
            and self._overflow(agent_id) < self.policy.emergency.slots
        )

    def _check_give(self, ev: TicketEvent, t: Replayed) -> None:
        self.gives += 1
        aid = ev.agent_id
        if aid is None or aid not in self.agents:
            self._fail(ev, f"given to unknown agent {aid}")
            return
        view = self.agents[aid]
        reason = fit(
            view.profile, view.presence, Need(t.channel, t.category, t.language, t.priority, t.pool)
        )
        if reason is not None:
            self._fail(ev, f"agent {aid} not eligible: {reason}")
        # Priority: nothing better waited that this agent could have taken instead.
        rank = PRIORITY_RANK[t.priority]
        contested = False
        for klass, ranks in self._waiting.items():
            better = [r for r, n in ranks.items() if n > 0 and r < rank]
            if not better:
                continue
            contested = True
            if self._could_take(aid, klass, min(better)):
                self._fail(ev, f"{t.priority} given to {aid} while a P{min(better)} {klass} waited")
                break
        self.contested += contested
        # Capacity, counted after the give.
        cap = view.profile.capacity.get(t.channel, 0)
        load = self.load.setdefault(aid, Counter())
        load[t.channel] += 1
        if load[t.channel] <= cap:
            if ev.emergency:
                self._fail(ev, "marked emergency within capacity")
            return
        self.emergency_gives += 1
        if not ev.emergency:
            self._fail(ev, f"{aid} over {t.channel} capacity {load[t.channel]}/{cap}")
        elif not (
            t.priority in self.policy.emergency.priorities
            and view.profile.security
            and cap > 0
            and self._overflow(aid) <= self.policy.emergency.slots
        ):
            self._fail(ev, f"emergency slot not allowed: {aid} {dict(load)} cap {cap}")

    def apply(self, ev: TicketEvent) -> None:
        self.events += 1
        if ev.position is not None:
            if self.position is not None and ev.position != self.position + 1:
                self._fail(ev, f"position {ev.position} after {self.position}")
            self.position = ev.position
        t = self.tickets.get(ev.ticket_id)
        if t is None:
            if ev.event != "opened" or ev.sequence != 1:
                self._fail(ev, "first event of a ticket is not opened#1")
            t = Replayed(
                ev.ticket_id,
                "queued",
                ev.priority,
                ev.channel,
                ev.category,
                ev.language,
                ev.pool,
                1,
            )
            self.tickets[ev.ticket_id] = t
            self._wait(t)
            self._check_state(ev, t)
            return
        if ev.sequence != t.sequence + 1:
            self._fail(ev, f"sequence {ev.sequence} after {t.sequence}")
        t.sequence = ev.sequence
        self._transition(ev, t)
        self._check_state(ev, t)

    def _check_state(self, ev: TicketEvent, t: Replayed) -> None:
        if ev.state != t.state:
            self._fail(ev, f"event says {ev.state}, replay says {t.state}")

    def _transition(self, ev: TicketEvent, t: Replayed) -> None:
        name, before = ev.event, t.state
        if name in ANNOTATIONS or name == "opened":
            if name == "opened":
                self._fail(ev, "opened twice")
            if before == "resolved" and name not in AFTER_RESOLVED:
                self._fail(ev, f"{name} on a resolved ticket")
            if (ev.priority, ev.pool, ev.category) != (t.priority, t.pool, t.category):
                waiting = t.state == "queued"
                if waiting:
                    self._unwait(t)
                t.priority, t.pool, t.category = ev.priority, ev.pool, ev.category
                if waiting:
                    self._wait(t)
        elif name == "reopened":
            if before != "resolved":
                self._fail(ev, f"reopened from {before}")
            t.priority, t.pool, t.category = ev.priority, ev.pool, ev.category
            t.routed, t.openings = False, t.openings + 1
            self._set(t, "queued")
        elif name == "queued":
            if before != "queued" or t.routed:
                self._fail(ev, f"queued from {before} (routed before: {t.routed})")
            t.routed = True
        elif name in ("offered", "assigned"):
            if before != "queued" or t.agent_id is not None:
                self._fail(ev, f"given from {before} held by {t.agent_id}")
            self._check_give(ev, t)
            t.agent_id, t.routed = ev.agent_id, True
            self._set(t, name)
        elif name == "accepted":
            if before != "offered" or ev.agent_id != t.agent_id:
                self._fail(ev, f"accepted from {before} by {ev.agent_id} (holder {t.agent_id})")
            self._set(t, "assigned")
        elif name in ("offer_expired", "reassigned"):
            allowed = (
                {"offered"} if name == "offer_expired" else {"assigned", "waiting_on_customer"}
            )
            if before not in allowed or ev.agent_id != t.agent_id:
                self._fail(ev, f"{name} from {before} of {ev.agent_id} (holder {t.agent_id})")
            self._release(t)
            self._set(t, "queued")
        elif name == "agent_replied":
            if before not in ("assigned", "waiting_on_customer") or ev.agent_id != t.agent_id:
                self._fail(ev, f"agent_replied from {before} by {ev.agent_id}")
            self._set(t, "assigned")
        elif name == "waiting_on_customer":
            if before != "assigned":
                self._fail(ev, f"waiting_on_customer from {before}")
            self._set(t, "waiting_on_customer")
        elif name == "customer_replied":
            if before != "waiting_on_customer":
                self._fail(ev, f"customer_replied from {before}")
            self._set(t, "assigned")
        elif name == "resolved":
            if before not in HOLDING:
                self._fail(ev, f"resolved from {before}")
            self._release(t)
            self._set(t, "resolved")

    # -- after the last event ----------------------------------------------------

    def unrouted(self) -> list[str]:
        """Tickets opened or reopened whose opening got no routing decision: lost work."""
        return sorted(tid for tid, t in self.tickets.items() if not t.routed)

    def holding(self) -> dict[tuple[str, str], int]:
        """(agent, channel) -> tickets held, as the log tells it."""
        out: Counter[tuple[str, str]] = Counter()
        for t in self.tickets.values():
            if t.state in HOLDING and t.agent_id is not None:
                out[(t.agent_id, t.channel)] += 1
        return dict(out)
