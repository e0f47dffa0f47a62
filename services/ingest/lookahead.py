"""Ingest's look-ahead: likely-P1 reports overtake a surge on the inbound topics (issue 15).

Triage is the cheap part of ingest: parse, redact and one model call for the chunk, no
store and no customer lookup. A record whose message the classifier puts in an urgent
category (the policy's `urgent` rule: a theft report, a takeover, an exposed secret) is
then processed in full by the same `Ingestor` the in-order consumer uses, and only its
`support.messages` events are published; the in-order pass reaches it later and
publishes the same event (same id) again, which the router and notify recognise as
applied. Dead letters are left to the in-order pass, so none is sent twice.
The loop, the window and the conversation-order rule are in shared/lookahead.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry

from services.ingest.classify import ToClassify, decide
from services.ingest.handlers import Ingestor
from services.ingest.intake import inbound_from_record
from services.ingest.pipeline import Prepared, prepare
from shared.events import publish_all
from shared.lookahead import LookaheadMetrics, ReadAhead, Window, every_partition
from shared.settings import IngestSettings
from shared.topics import INBOUND_BY_CHANNEL, MESSAGES

log = logging.getLogger(__name__)


def likely_p1(records: Sequence[Any], ingestor: Ingestor) -> list[bool]:
    """For each record: does any message in it classify into an urgent category?

    Pure CPU (run in a thread). A record that does not parse is not urgent: the in-order
    pass dead-letters it with the reason.
    """
    model, rules = ingestor.model, ingestor.rules
    urgent = [False] * len(records)
    items: list[tuple[int, ToClassify]] = []
    for i, record in enumerate(records):
        try:
            item = inbound_from_record(record)
            if len(item.raw) > ingestor.max_payload_bytes[item.channel]:
                continue
            for result in prepare(item.channel, item.provider, item.raw, ingestor.policy.parser):
                if isinstance(result, Prepared):  # not Skipped (a status update, a receipt)
                    items.append((i, result.to_classify()))
        except Exception:
            # Anything unreadable is the in-order pass's to judge (and dead-letter).
            log.debug("look-ahead skipped a record it could not read")
    if not items:
        return urgent
    texts = [c.full for _, c in items]
    rows = model.probabilities(texts)
    for (i, c), text, row in zip(items, texts, rows, strict=True):
        decided = decide(
            row, model.categories, rules, text=text, hint=c.hint, redactions=c.redactions
        )
        if decided.urgent(rules):
            urgent[i] = True
    return urgent


@dataclass
class IngestLookahead:
    """The triage and promotion the shared read-ahead loop calls."""

    ingestor: Ingestor
    broker: KafkaBroker

    async def triage(self, records: Sequence[Any]) -> list[bool]:
        # In a thread: a chunk's parsing and model call must not hold up the in-order
        # consumer's heartbeats or the webhooks on this event loop.
        return await asyncio.to_thread(likely_p1, records, self.ingestor)

    async def promote(self, records: Sequence[Any]) -> None:
        events = await self.ingestor.process([inbound_from_record(r) for r in records])
        await publish_all(self.broker, [e for e in events if e.topic == MESSAGES])


def read_ahead(
    settings: IngestSettings,
    ingestor: Ingestor,
    broker: KafkaBroker,
    registry: CollectorRegistry,
    group_id: str,
    *,
    enabled: bool,
) -> ReadAhead:
    """The look-ahead over the inbound topics of the in-order consumer group `group_id`."""
    triage = IngestLookahead(ingestor, broker)
    return ReadAhead(
        "ingest",
        settings.kafka_bootstrap,
        every_partition(*INBOUND_BY_CHANNEL.values()),
        group_id,
        triage.triage,
        triage.promote,
        LookaheadMetrics.create("ingest", registry),
        min_backlog=settings.lookahead_min_backlog,
        chunk=settings.lookahead_chunk,
        refresh_s=settings.lookahead_refresh_s,
        window=Window(settings.lookahead_max_window),
        enabled=enabled and settings.lookahead_enabled,
    )
