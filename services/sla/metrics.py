"""SLA's Prometheus metrics (omniroute_sla_<what>_<unit>)."""

from __future__ import annotations

from collections import Counter as Tally
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.sla.deadlines import SlaState
from shared.contracts.sla import SlaEvent


@dataclass(frozen=True)
class SlaMetrics:
    events: Counter
    breaches: Counter
    timers: Gauge
    firing_lag: Histogram
    achieved: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> SlaMetrics:
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
                "Timers by state (running, paused).",
                ["state"],
                registry=registry,
            ),
            firing_lag=Histogram(
                "omniroute_sla_firing_lag_seconds",
                "Seconds between a threshold's due time and its event leaving.",
                buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
                registry=registry,
            ),
            achieved=Histogram(
                "omniroute_sla_achieved_seconds",
                "Time to meet a target, by metric, priority and channel.",
                ["metric", "priority", "channel"],
                buckets=(10, 30, 60, 120, 300, 600, 1800, 3600, 14400, 86400),
                registry=registry,
            ),
        )

    def observe(self, events: list[SlaEvent], lag_from: datetime | None = None) -> None:
        for e in events:
            self.events.labels(e.event, e.metric).inc()
            if e.event == "breached":
                self.breaches.labels(e.metric, e.priority, e.channel).inc()
            if e.event == "met":
                self.achieved.labels(e.metric, e.priority, e.channel).observe(e.elapsed_s)
            if lag_from is not None and e.event in ("warning", "breached"):
                threshold = e.due_at if e.event == "breached" else None
                if threshold is not None:
                    self.firing_lag.observe(max(0.0, (lag_from - threshold).total_seconds()))

    def observe_state(self, state: SlaState) -> None:
        tally = Tally(t.state for t in state.timers.values())
        for s in ("running", "paused"):
            self.timers.labels(s).set(tally.get(s, 0))
