"""Router's Prometheus metrics (omniroute_router_<what>_<unit>)."""

from __future__ import annotations

from collections import Counter as Tally
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.router.engine import Changes, RouterState


@dataclass(frozen=True)
class RouterMetrics:
    ticket_events: Counter
    tickets: Gauge
    queue_depth: Gauge
    oldest_waiting: Gauge
    time_to_offer: Histogram
    agents: Gauge
    deadletters: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> RouterMetrics:
        return cls(
            ticket_events=Counter(
                "omniroute_router_ticket_events_total",
                "Ticket events published, by event and priority.",
                ["event", "priority"],
                registry=registry,
            ),
            tickets=Gauge(
                "omniroute_router_tickets",
                "Tickets in memory by state and priority.",
                ["state", "priority"],
                registry=registry,
            ),
            queue_depth=Gauge(
                "omniroute_router_queue_depth",
                "Tickets waiting for an agent, by priority.",
                ["priority"],
                registry=registry,
            ),
            oldest_waiting=Gauge(
                "omniroute_router_oldest_waiting_seconds",
                "Age of the longest-waiting queued ticket, by priority.",
                ["priority"],
                registry=registry,
            ),
            time_to_offer=Histogram(
                "omniroute_router_time_to_offer_seconds",
                "From ticket opened to first offer or assignment.",
                ["priority", "channel"],
                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 1800),
                registry=registry,
            ),
            agents=Gauge(
                "omniroute_router_agents",
                "Agents by presence.",
                ["presence"],
                registry=registry,
            ),
            deadletters=Counter(
                "omniroute_router_deadletters_total",
                "Inputs the router could not apply.",
                registry=registry,
            ),
        )

    def observe(self, changes: Changes, state: RouterState, now: datetime) -> None:
        for e in changes.events:
            self.ticket_events.labels(e.event, e.priority).inc()
            if e.event in ("offered", "assigned") and e.sequence <= 3:
                self.time_to_offer.labels(e.priority, e.channel).observe(
                    (now - e.opened_at).total_seconds()
                )
        if changes.events or changes.agents:
            self.observe_state(state, now)

    def observe_state(self, state: RouterState, now: datetime | None = None) -> None:
        by_state = Tally((t.state, t.priority) for t in state.tickets.values())
        self.tickets.clear()
        for (s, p), n in by_state.items():
            self.tickets.labels(s, p).set(n)
        for p in ("P1", "P2", "P3", "P4"):
            waiting = [t for t in state.tickets.values() if t.state == "queued" and t.priority == p]
            self.queue_depth.labels(p).set(len(waiting))
            oldest = min((t.waiting_since for t in waiting), default=None)
            self.oldest_waiting.labels(p).set(
                (now - oldest).total_seconds() if now and oldest else 0
            )
        presence: Tally[str] = Tally(a.presence for a in state.agents.values())
        for s in ("online", "away", "offline"):
            self.agents.labels(s).set(presence.get(s, 0))
