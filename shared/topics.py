"""Topic names: the public contract adapters, dashboards and alerts rely on."""

from __future__ import annotations

from typing import Final

from shared.contracts.common import Channel

INBOUND_EMAIL: Final = "support.inbound.email"
INBOUND_SOCIAL: Final = "support.inbound.social"
INBOUND_PHONE: Final = "support.inbound.phone"
INBOUND_CHAT: Final = "support.inbound.chat"
MESSAGES: Final = "support.messages"
TICKETS: Final = "support.tickets"
AGENTS: Final = "support.agents"
SLA: Final = "support.sla"
INCIDENTS: Final = "support.incidents"
NOTIFICATIONS: Final = "support.notifications"
DEADLETTER: Final = "support.deadletter"
CUSTOMERS: Final = "support.customers"  # compacted, keyed by customer id
ERASURES: Final = "support.erasures"

INBOUND_BY_CHANNEL: Final[dict[Channel, str]] = {
    "email": INBOUND_EMAIL,
    "social": INBOUND_SOCIAL,
    "phone": INBOUND_PHONE,
    "chat": INBOUND_CHAT,
}
CHANNEL_BY_INBOUND: Final[dict[str, Channel]] = {t: c for c, t in INBOUND_BY_CHANNEL.items()}

# Partition counts for topics created at start-up. Keys keep order where it matters
# (conversation, ticket, agent), so partitions bound the parallelism of workers.
PARTITIONS: Final[dict[str, int]] = {
    INBOUND_EMAIL: 4,
    INBOUND_SOCIAL: 4,
    INBOUND_PHONE: 4,
    INBOUND_CHAT: 4,
    MESSAGES: 4,
    TICKETS: 4,
    AGENTS: 1,
    SLA: 2,
    INCIDENTS: 1,
    NOTIFICATIONS: 2,
    DEADLETTER: 1,
    CUSTOMERS: 4,
    ERASURES: 1,
}
ALL_TOPICS: Final[tuple[str, ...]] = tuple(PARTITIONS)
# Kept as the latest record per key (cleanup.policy=compact), not for a time.
COMPACTED: Final[frozenset[str]] = frozenset({CUSTOMERS})

_DAY_MS: Final = 86_400_000
# How long each topic keeps its records (README, "What Kafka keeps"): what carries personal
# data goes soonest. The services create topics with these (the embedded stack, Compose);
# deploy/base/kafka-topics.yaml says the same for Strimzi (a deploy test compares them).
TOPIC_CONFIGS: Final[dict[str, dict[str, str]]] = {
    **{t: {"retention.ms": str(3 * _DAY_MS)} for t in INBOUND_BY_CHANNEL.values()},
    MESSAGES: {"retention.ms": str(7 * _DAY_MS)},
    TICKETS: {"retention.ms": str(14 * _DAY_MS)},
    AGENTS: {"retention.ms": str(7 * _DAY_MS)},
    SLA: {"retention.ms": str(7 * _DAY_MS)},
    INCIDENTS: {"retention.ms": str(14 * _DAY_MS)},
    NOTIFICATIONS: {"retention.ms": str(7 * _DAY_MS)},
    DEADLETTER: {"retention.ms": str(30 * _DAY_MS)},
    # The latest record per customer; an erasure's tombstone stays a day.
    CUSTOMERS: {"cleanup.policy": "compact", "delete.retention.ms": str(_DAY_MS)},
    ERASURES: {"retention.ms": str(7 * _DAY_MS)},
}
