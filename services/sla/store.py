"""SLA timers in MongoDB (`sla_timers`) and how far each ticket's events were applied."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from pymongo import ASCENDING, ReplaceOne

from services.sla.deadlines import SlaState, Timer
from shared.mongo import Database, Document


def timer_doc(t: Timer) -> Document:
    return {
        "_id": t.timer_id,
        "ticket_id": t.ticket_id,
        "metric": t.metric,
        "priority": t.priority,
        "channel": t.channel,
        "customer_id": t.customer_id,
        "agent_id": t.agent_id,
        "started_at": t.started_at,
        "due_at": t.due_at,
        "target_s": t.target_s,
        "state": t.state,
        "paused_at": t.paused_at,
        "warned": t.warned,
        "breached": t.breached,
    }


def timer_from_doc(d: Document) -> Timer:
    return Timer(
        timer_id=d["_id"],
        ticket_id=d["ticket_id"],
        metric=d["metric"],
        priority=d["priority"],
        channel=d["channel"],
        customer_id=d["customer_id"],
        agent_id=d.get("agent_id"),
        started_at=d["started_at"],
        due_at=d["due_at"],
        target_s=float(d["target_s"]),
        state=d["state"],
        paused_at=d.get("paused_at"),
        warned=bool(d.get("warned")),
        breached=bool(d.get("breached")),
    )


class SlaStore(Protocol):
    async def ensure_indexes(self) -> None: ...

    async def load(self, state: SlaState) -> None: ...

    async def save(self, timers: Iterable[Timer], progress: dict[str, int]) -> None: ...


class MongoSlaStore:
    def __init__(self, db: Database) -> None:
        self.timers = db["sla_timers"]
        self.progress = db["sla_progress"]

    async def ensure_indexes(self) -> None:
        await self.timers.create_index([("ticket_id", ASCENDING)])
        await self.timers.create_index([("state", ASCENDING), ("due_at", ASCENDING)])

    async def load(self, state: SlaState) -> None:
        async for d in self.timers.find({}):
            state.add(timer_from_doc(d))
        for t in state.timers.values():
            key = (t.ticket_id, t.metric)
            state.cycles[key] = state.cycles.get(key, 0) + 1
        async for d in self.progress.find({}):
            state.applied_seq[d["_id"]] = int(d["seq"])

    async def save(self, timers: Iterable[Timer], progress: dict[str, int]) -> None:
        ops = [ReplaceOne({"_id": t.timer_id}, timer_doc(t), upsert=True) for t in timers]
        if ops:
            await self.timers.bulk_write(ops, ordered=False)
        if progress:
            await self.progress.bulk_write(
                [
                    ReplaceOne({"_id": tid}, {"_id": tid, "seq": seq}, upsert=True)
                    for tid, seq in progress.items()
                ],
                ordered=False,
            )
