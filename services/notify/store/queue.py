"""Queue statistics (`notify_queue_stats`): the latest assignments per priority queue,
from which the pace of each queue is measured (estimate.py).

One document per priority (`_id` = "P1".."P4"): `samples`, newest last, at most
`keep` of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pymongo import UpdateOne

from services.notify.estimate import Sample, samples_by_priority
from shared.mongo import Database, ensure_only_indexes

COLLECTIONS = ("notify_queue_stats",)


class QueueStatsStore(Protocol):
    async def ensure_indexes(self) -> None: ...
    async def record(self, samples: Sequence[Sample]) -> None: ...
    async def recent(self) -> dict[str, list[Sample]]: ...


class MongoQueueStatsStore:
    def __init__(self, db: Database, keep: int = 64) -> None:
        self.stats = db["notify_queue_stats"]
        self.keep = keep

    async def ensure_indexes(self) -> None:
        await ensure_only_indexes(self.stats, [])  # four documents, read whole

    async def record(self, samples: Sequence[Sample]) -> None:
        ops = [
            UpdateOne(
                {"_id": priority},
                {
                    "$push": {
                        "samples": {
                            "$each": [
                                {
                                    "ticket_id": s.ticket_id,
                                    "cycle": s.cycle,
                                    "wait_s": s.wait_s,
                                    "position": s.position,
                                    "at": s.at,
                                }
                                for s in sorted(items, key=lambda s: s.at)
                            ],
                            "$slice": -self.keep,
                        }
                    }
                },
                upsert=True,
            )
            for priority, items in sorted(samples_by_priority(samples).items())
        ]
        if ops:
            await self.stats.bulk_write(ops, ordered=False)

    async def recent(self) -> dict[str, list[Sample]]:
        return {
            d["_id"]: [
                Sample(d["_id"], s["ticket_id"], s["cycle"], s["wait_s"], s["position"], s["at"])
                for s in d.get("samples", [])
            ]
            async for d in self.stats.find({})
        }
