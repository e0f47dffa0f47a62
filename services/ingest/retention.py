"""What ingest's retention sweeper removes (policy/retention.yaml), held customers skipped.

- training_examples: agents' corrections with their text, `training_examples` after `at`
- message_text: the day collections of classified texts (classified_texts_YYYYMMDD),
  dropped whole once the day is older than the period (none of a held customer's: their
  texts are kept and the day stays until it holds no held customer's text)
- audit: the erasure log (`erasures`) after its `at`
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from services.ingest.store import MongoTrainingStore
from shared.mongo import Database
from shared.retention import RetentionPolicy, Sweep, remove_expired

Held = Callable[[], Awaitable[set[str]]]


def ingest_sweeps(db: Database, policy: RetentionPolicy, held: Held) -> list[Sweep]:
    async def examples(now: datetime, limit: int) -> int:
        cutoff = policy.cutoff("training_examples", now)
        query = {"at": {"$lt": cutoff}}
        return await remove_expired(db["training_examples"], query, limit, held=await held())

    async def texts(now: datetime, limit: int) -> int:
        oldest = f"{MongoTrainingStore.PREFIX}{policy.cutoff('message_text', now):%Y%m%d}"
        keep = sorted(await held())
        names = await db.list_collection_names(
            filter={"name": {"$regex": f"^{MongoTrainingStore.PREFIX}"}}
        )
        removed = 0
        for name in sorted(n for n in names if n < oldest):
            query = {"customer_id": {"$nin": keep}} if keep else {}
            removed += await remove_expired(db[name], query, limit - removed)
            if not await db[name].count_documents({}, limit=1):
                await db.drop_collection(name)
            if removed >= limit:
                break
        return removed

    async def erasure_log(now: datetime, limit: int) -> int:
        query = {"at": {"$lt": policy.cutoff("audit", now)}}
        return await remove_expired(db["erasures"], query, limit)

    return [
        Sweep("training_examples", examples),
        Sweep("classified_texts", texts),
        Sweep("erasures", erasure_log),
    ]
