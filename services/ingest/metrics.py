"""Ingest's Prometheus metrics (names: omniroute_ingest_<what>_<unit>)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

from shared.access import AccessMetrics
from shared.contracts.messages import MessageReceived


@dataclass(frozen=True)
class IngestMetrics:
    messages: Counter
    parse_seconds: Histogram
    deadletters: Counter
    redactions: Counter
    customers: Counter
    webhooks: Counter
    categories: Counter
    classify_seconds: Histogram
    training_examples: Counter
    access: AccessMetrics

    def observe_message(self, message: MessageReceived) -> None:
        """A message published: its category, its redactions, its channel's count."""
        self.categories.labels(message.category).inc()
        for r in message.redactions:
            self.redactions.labels(r.kind).inc(r.count)
        self.messages.labels(message.channel, message.provider, "published").inc()

    @classmethod
    def create(cls, registry: CollectorRegistry) -> IngestMetrics:
        return cls(
            messages=Counter(
                "omniroute_ingest_messages_total",
                "Inbound provider messages by channel, provider and outcome.",
                ["channel", "provider", "outcome"],
                registry=registry,
            ),
            parse_seconds=Histogram(
                "omniroute_ingest_parse_seconds",
                "Time to parse and redact one inbound payload.",
                ["channel"],
                buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
                registry=registry,
            ),
            deadletters=Counter(
                "omniroute_ingest_deadletters_total",
                "Payloads sent to support.deadletter, by reason.",
                ["reason"],
                registry=registry,
            ),
            redactions=Counter(
                "omniroute_ingest_redactions_total",
                "Secrets removed from messages, by kind.",
                ["kind"],
                registry=registry,
            ),
            customers=Counter(
                "omniroute_ingest_customers_resolved_total",
                "Senders resolved to a known customer or a new one.",
                ["result"],
                registry=registry,
            ),
            webhooks=Counter(
                "omniroute_ingest_webhook_requests_total",
                "HTTP webhook requests by channel, provider and status code.",
                ["channel", "provider", "code"],
                registry=registry,
            ),
            categories=Counter(
                "omniroute_ingest_classified_total",
                "Published messages by the category they were given.",
                ["category"],
                registry=registry,
            ),
            classify_seconds=Histogram(
                "omniroute_ingest_classify_batch_seconds",
                "Time to classify one batch of messages (one model call).",
                buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
                registry=registry,
            ),
            training_examples=Counter(
                "omniroute_ingest_training_examples_total",
                "Agents' category corrections stored as training examples, by outcome.",
                ["outcome"],
                registry=registry,
            ),
            access=AccessMetrics.create("ingest", registry),
        )
