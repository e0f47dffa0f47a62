"""Router's Prometheus metrics (omniroute_router_<what>_<unit>).

Nothing here scans the tickets: counts by state and priority, queue depth and the oldest
waiting ticket come from structures the engine keeps as it goes; per-agent figures loop
over the agents only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.router.priority import PRIORITIES
from services.router.state import RouterState
from services.router.state.model import Changes
from shared.contracts.common import CHANNELS

STATES = ("queued", "offered", "assigned", "waiting_on_customer", "resolved")
PRESENCES = ("online", "away", "offline")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
STEP_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1)
# What one engine step spends its time on (omniroute_router_step_seconds{phase}).
STEP_PHASES = ("lock_wait", "decide", "journal", "publish", "fold")


@dataclass(frozen=True)
class RouterMetrics:
    ticket_events: Counter
    tickets: Gauge
    queue_depth: Gauge
    oldest_waiting: Gauge
    time_to_offer: Histogram
    time_to_accept: Histogram
    offers_expired: Counter
    agents: Gauge
    capacity_utilisation: Gauge
    deadletters: Counter
    step_seconds: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> RouterMetrics:
        metrics = cls(
            ticket_events=Counter(
                "omniroute_router_ticket_events_total",
                "Ticket events published, by event and priority.",
                ["event", "priority"],
                registry=registry,
            ),
            tickets=Gauge(
                "omniroute_router_tickets",
                "Tickets in memory by state and priority (resolved: the last 8 days).",
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
                "From the customer's message (received by ingest) to the first offer or "
                "assignment of the opening.",
                ["priority", "channel"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            time_to_accept=Histogram(
                "omniroute_router_time_to_accept_seconds",
                "From the customer's message to an agent accepting (or auto-accepting) it.",
                ["priority", "channel"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            offers_expired=Counter(
                "omniroute_router_offers_expired_total",
                "Offers taken back: timeout, declined, agent_away, escalated.",
                ["channel", "reason"],
                registry=registry,
            ),
            agents=Gauge(
                "omniroute_router_agents",
                "Agents by presence.",
                ["presence"],
                registry=registry,
            ),
            capacity_utilisation=Gauge(
                "omniroute_router_capacity_utilisation_ratio",
                "Share of online agents' capacity in use, by channel (emergency slots "
                "beyond capacity count as full).",
                ["channel"],
                registry=registry,
            ),
            deadletters=Counter(
                "omniroute_router_deadletters_total",
                "Inputs the router could not apply.",
                registry=registry,
            ),
            step_seconds=Histogram(
                "omniroute_router_step_seconds",
                "Time of one engine step by phase: waiting for the engine lock, deciding in "
                "memory, the journal append, the publish (until Kafka acknowledges) and the fold.",
                ["phase"],
                buckets=STEP_BUCKETS,
                registry=registry,
            ),
        )
        for phase in STEP_PHASES:  # every phase exported from the start, at zero
            metrics.step_seconds.labels(phase)
        return metrics

    def observe(self, changes: Changes, state: RouterState, now: datetime) -> None:
        for e in changes.events:
            self.ticket_events.labels(e.event, e.priority).inc()
        for what, priority, channel, seconds in changes.timings:
            hist = self.time_to_offer if what == "offer" else self.time_to_accept
            hist.labels(priority, channel).observe(seconds)
        for channel, reason in changes.expired:
            self.offers_expired.labels(channel, reason).inc()
        if changes.events or changes.agents:
            self.observe_state(state, now)

    def observe_state(self, state: RouterState, now: datetime) -> None:
        for s in STATES:
            for p in PRIORITIES:
                self.tickets.labels(s, p).set(state.counts.get((s, p), 0))
        for p in PRIORITIES:
            self.queue_depth.labels(p).set(state.queue.depth[p])
            since = state.queue.oldest_since(p)
            self.oldest_waiting.labels(p).set(
                max(0.0, now.timestamp() - since) if since is not None else 0
            )
        presence = dict.fromkeys(PRESENCES, 0)
        used = dict.fromkeys(CHANNELS, 0)
        capacity = dict.fromkeys(CHANNELS, 0)
        for a in state.agents.values():
            presence[a.presence] = presence.get(a.presence, 0) + 1
            if a.presence != "online":
                continue
            for ch in CHANNELS:
                cap = a.profile.capacity.get(ch, 0)
                capacity[ch] += cap
                used[ch] += min(cap, a.load.get(ch, 0))
        for s, n in presence.items():
            self.agents.labels(s).set(n)
        for ch in CHANNELS:
            self.capacity_utilisation.labels(ch).set(used[ch] / capacity[ch] if capacity[ch] else 0)
