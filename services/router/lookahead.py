"""Router's look-ahead: P1 messages overtake a surge on support.messages (issue 15).

Ingest publishes a theft report as soon as it sees it, but on support.messages it still
lands behind the surge's messages. On the lease holder, the shared read-ahead loop
(shared/lookahead.py) reads past the engine's committed position; a message whose
category (or possible urgent category) the routing policy makes P1 is applied through the
engine's normal step (`RouterEngine.process`: under its lock, journaled before anything is
published). When the in-order consumer reaches it, `on_message` finds the message
applied: no second ticket, no second event. The look-ahead commits no offsets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from pydantic_core import from_json

from services.router.engine import RouterEngine
from shared.contracts.messages import MESSAGE_RECEIVED
from shared.events import header
from shared.lookahead import LookaheadMetrics, ReadAhead, Window, every_partition
from shared.settings import RouterSettings
from shared.topics import MESSAGES


def p1_message(record: Any, p1: frozenset[str], applied: Callable[[str], bool]) -> bool:
    """Whether the record is a message the policy makes P1 — by its category, or by the
    urgent category it possibly concerns (`possible_urgent`: the ticket opens P1 all the
    same) — and the engine has not applied."""
    if header(record.headers or [], "ce_type") != MESSAGE_RECEIVED:
        return False
    try:
        data = from_json(record.value or b"")
    except ValueError:
        return False  # the in-order pass dead-letters it
    if not isinstance(data, dict):
        return False
    message_id = data.get("message_id")
    # Any JSON may come (a list is unhashable): only strings can name a category.
    named = [v for v in (data.get("category"), data.get("possible_urgent")) if isinstance(v, str)]
    urgent = any(v in p1 for v in named)
    return urgent and isinstance(message_id, str) and not applied(message_id)


@dataclass
class RouterLookahead:
    engine: RouterEngine
    may_act: Callable[[], bool]  # this replica holds the lease

    @property
    def p1(self) -> frozenset[str]:
        return frozenset(self.engine.state.policy.priorities.get("P1", ()))

    def active(self) -> bool:
        return self.may_act() and self.engine.loaded

    async def triage(self, records: Sequence[Any]) -> list[bool]:
        p1 = self.p1
        known = self.engine.state.ticket_by_message
        return [p1_message(r, p1, known.__contains__) for r in records]

    async def promote(self, records: Sequence[Any]) -> None:
        if not self.active():
            raise RuntimeError("not the lease holder")  # left to the in-order pass
        await self.engine.process(records)


def read_ahead(
    settings: RouterSettings,
    engine: RouterEngine,
    may_act: Callable[[], bool],
    registry: CollectorRegistry,
    group_id: str,
    *,
    enabled: bool,
) -> ReadAhead:
    """The look-ahead over support.messages of the engine whose offsets are `group_id`'s."""
    triage = RouterLookahead(engine, may_act)
    return ReadAhead(
        "router",
        settings.kafka_bootstrap,
        every_partition(MESSAGES),
        group_id,
        triage.triage,
        triage.promote,
        LookaheadMetrics.create("router", registry),
        min_backlog=settings.lookahead_min_backlog,
        chunk=settings.lookahead_chunk,
        refresh_s=settings.lookahead_refresh_s,
        may_act=triage.active,
        window=Window(settings.lookahead_max_window),
        enabled=enabled and settings.lookahead_enabled,
    )
