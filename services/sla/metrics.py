"""SLA's Prometheus metrics (omniroute_sla_<what>_<unit>). Nothing here scans the timers:
the state keeps its counts as it changes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.sla.deadlines import SlaState
from shared.contracts.sla import SlaEvent

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
RESPONSE_BUCKETS = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400)
RESOLUTION_BUCKETS = (300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800)


@dataclass(frozen=True)
class SlaMetrics:
    events: Counter
    breaches: Counter
    timers: Gauge
    firing_lag: Histogram
    first_response: Histogram
    next_response: Histogram
    resolution: Histogram
    recovered: Counter
    journal_backlog: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> SlaMetrics:
        by_ticket = ["priority", "channel"]
        return cls(
            events=Counter(
                "omniroute_sla_events_total",
                "SLA events published, by event and metric.",
                ["event", "metric"],
                registry=registry,
            ),
            breaches=Counter(
                "omniroute_sla_breaches_total",
                "SLA breaches by metric, priority and channel.",
                ["metric", "priority", "channel"],
                registry=registry,
            ),
            timers=Gauge(
                "omniroute_sla_timers",
                "Active timers by state: running, or paused while waiting on the customer.",
                ["state"],
                registry=registry,
            ),
            firing_lag=Histogram(
                "omniroute_sla_firing_lag_seconds",
                "Seconds from a threshold (warning or breach) to its event leaving the engine.",
                ["event"],
                buckets=LAG_BUCKETS,
                registry=registry,
            ),
            first_response=Histogram(
                "omniroute_sla_first_response_seconds",
                "Business seconds to the first agent reply, by priority and channel.",
                by_ticket,
                buckets=RESPONSE_BUCKETS,
                registry=registry,
            ),
            next_response=Histogram(
                "omniroute_sla_next_response_seconds",
                "Business seconds from a customer message to the agent's reply.",
                by_ticket,
                buckets=RESPONSE_BUCKETS,
                registry=registry,
            ),
            resolution=Histogram(
                "omniroute_sla_resolution_seconds",
                "Business seconds from (re)opening to resolved, by priority and channel.",
                by_ticket,
                buckets=RESOLUTION_BUCKETS,
                registry=registry,
            ),
            recovered=Counter(
                "omniroute_sla_recovered_events_total",
                "Journaled events a (new) lease holder published because the topic lacked them.",
                registry=registry,
            ),
            journal_backlog=Gauge(
                "omniroute_sla_journal_backlog",
                "Journal entries not yet folded into sla_timers.",
                registry=registry,
            ),
        )

    def observe(self, events: list[SlaEvent]) -> None:
        for e in events:
            self.events.labels(e.event, e.metric).inc()
            if e.event == "breached":
                self.breaches.labels(e.metric, e.priority, e.channel).inc()
            elif e.event == "met" and e.achieved_s is not None:
                achieved = {
                    "first_response": self.first_response,
                    "next_response": self.next_response,
                    "resolution": self.resolution,
                }[e.metric]
                achieved.labels(e.priority, e.channel).observe(e.achieved_s)

    def observe_firing(
        self, events: list[SlaEvent], left_at: datetime, armed_at: Mapping[str, datetime | None]
    ) -> None:
        """Lag counts from the threshold, or from when it became known if that was later
        (an escalation can move a deadline into the past: that is not the engine's lag)."""
        self.observe(events)
        for e in events:
            if e.threshold_at is None:
                continue
            since = e.threshold_at
            armed = armed_at.get(e.timer_id)
            if armed is not None and armed > since:
                since = armed
            self.firing_lag.labels(e.event).observe(max(0.0, (left_at - since).total_seconds()))

    def observe_state(self, state: SlaState, journal_backlog: int = 0) -> None:
        for s in ("running", "paused"):
            self.timers.labels(s).set(state.counts.get(s, 0))
        self.journal_backlog.set(journal_backlog)
