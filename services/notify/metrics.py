"""Notify's Prometheus metrics (omniroute_notify_<what>_<unit>).

Gauges read from MongoDB (outbox depth, incidents) describe the whole system, not one
replica: every replica reports the same value; aggregate them with max().
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.contracts.incidents import SEVERITIES

LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)


@dataclass(frozen=True)
class NotifyMetrics:
    notifications: Counter
    outbox_depth: Gauge
    outbox_oldest: Gauge
    send_latency: Histogram
    send_duration: Histogram
    incidents_open: Gauge
    incident_tickets: Gauge
    incident_links: Counter
    deadletters: Counter
    corrections: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> NotifyMetrics:
        return cls(
            notifications=Counter(
                "omniroute_notify_notifications_total",
                "Notifications by channel, template and outcome"
                " (recorded, sent, failed, dead, merged, delayed).",
                ["channel", "template", "outcome"],
                registry=registry,
            ),
            outbox_depth=Gauge(
                "omniroute_notify_outbox_depth",
                "Notifications waiting to be sent (pending or being sent).",
                registry=registry,
            ),
            outbox_oldest=Gauge(
                "omniroute_notify_outbox_oldest_seconds",
                "Age of the oldest notification not yet sent.",
                registry=registry,
            ),
            send_latency=Histogram(
                "omniroute_notify_send_latency_seconds",
                "From a notification's cause being recorded to its delivery, by channel.",
                ["channel"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            send_duration=Histogram(
                "omniroute_notify_send_duration_seconds",
                "Duration of one delivery attempt (SMTP or webhook call), by channel.",
                ["channel"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            incidents_open=Gauge(
                "omniroute_notify_incidents_open",
                "Incidents not resolved, by severity.",
                ["severity"],
                registry=registry,
            ),
            incident_tickets=Gauge(
                "omniroute_notify_incident_linked_tickets",
                "Tickets linked to open incidents, by the incident's severity.",
                ["severity"],
                registry=registry,
            ),
            incident_links=Counter(
                "omniroute_notify_incident_links_total",
                "Tickets linked to an incident (told about it), by this replica.",
                registry=registry,
            ),
            deadletters=Counter(
                "omniroute_notify_deadletters_total",
                "Dead letters published, by reason.",
                ["reason"],
                registry=registry,
            ),
            corrections=Counter(
                "omniroute_notify_estimate_corrections_total",
                "Corrected estimates sent: customers still waiting well past the one they got.",
                registry=registry,
            ),
        )

    def observe_incidents(self, by_severity: dict[str, int], linked: dict[str, int]) -> None:
        for s in SEVERITIES:
            self.incidents_open.labels(s).set(by_severity.get(s, 0))
            self.incident_tickets.labels(s).set(linked.get(s, 0))
