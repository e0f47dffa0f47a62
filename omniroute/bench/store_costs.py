"""What one document costs the store, by kind of write: the yardstick for the pipeline.

The pipeline's throughput is bounded by the store (see docs/benchmarks.md): every message
becomes a handful of document writes across the four services. This measures each kind
of write the services issue, in batches of 100 as they issue them, on a collection of
3,000 documents with the indexes a hot collection carries (three secondary indexes).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, InsertOne, MongoClient, ReplaceOne, UpdateOne

BATCH = 100
PRELOAD = 3000


def _doc(i: int, now: datetime) -> dict[str, Any]:
    return {
        "customer_id": f"cus_{i}",
        "conversation_id": f"cnv_{i}",
        "channel": "chat",
        "category": "deposit",
        "priority": "P3",
        "state": "queued",
        "seq": 1,
        "status": "pending",
        "next_at": now,
        "text": "您好，我们已收到您的请求。We have received your request. " * 8,
    }


def measure_store_costs(mongo_uri: str) -> dict[str, float]:
    """Milliseconds per document for each kind of write (and two kinds of lookup)."""
    client: Any = MongoClient(mongo_uri, tz_aware=True)
    db = client[f"bench_store_{uuid.uuid4().hex[:6]}"]
    coll = db["docs"]
    try:
        coll.create_index([("status", ASCENDING), ("next_at", ASCENDING)])
        coll.create_index([("state", ASCENDING), ("priority", ASCENDING)])
        coll.create_index([("identity_keys", ASCENDING)], unique=True, sparse=True)
        now = datetime.now(UTC)
        coll.insert_many(
            [
                {
                    "_id": f"pre{i}",
                    **_doc(i, now),
                    "identities": [{"kind": "email", "value": f"u{i}@example.com"}],
                    "identity_keys": [f"email:u{i}@example.com"],
                }
                for i in range(PRELOAD)
            ]
        )
        existing = iter(range(PRELOAD))
        out: dict[str, float] = {}

        def per_doc(name: str, run: Callable[[], object]) -> None:
            started = time.perf_counter()
            run()
            out[name] = round((time.perf_counter() - started) * 1000 / BATCH, 3)

        def take() -> list[int]:
            return [next(existing) for _ in range(BATCH)]

        fresh = uuid.uuid4().hex[:6]
        per_doc(
            "insert",
            lambda: coll.bulk_write(
                [InsertOne({"_id": f"i{fresh}{i}", **_doc(i, now)}) for i in range(BATCH)],
                ordered=False,
            ),
        )
        per_doc(
            "upsert_new",
            lambda: coll.bulk_write(
                [
                    UpdateOne({"_id": f"u{fresh}{i}"}, {"$set": _doc(i, now)}, upsert=True)
                    for i in range(BATCH)
                ],
                ordered=False,
            ),
        )
        ids = take()
        per_doc(
            "update_set",
            lambda: coll.bulk_write(
                [UpdateOne({"_id": f"pre{i}"}, {"$set": {"state": "offered"}}) for i in ids],
                ordered=False,
            ),
        )
        ids2 = take()
        per_doc(
            "update_compare_and_set",
            lambda: coll.bulk_write(
                [
                    UpdateOne(
                        {"_id": f"pre{i}", "status": "pending"},
                        {"$set": {"status": "sending", "claim_id": fresh}},
                    )
                    for i in ids2
                ],
                ordered=False,
            ),
        )
        ids3 = take()
        per_doc(
            "replace",
            lambda: coll.bulk_write(
                [ReplaceOne({"_id": f"pre{i}"}, _doc(i, now)) for i in ids3], ordered=False
            ),
        )
        wanted = list(range(0, PRELOAD, PRELOAD // BATCH))
        per_doc(
            "lookup_indexed_in",
            lambda: list(
                coll.find({"identity_keys": {"$in": [f"email:u{i}@example.com" for i in wanted]}})
            ),
        )
        # The lookup ingest used before: an $or of $elemMatch is not index-routed here.
        few = wanted[:10]
        started = time.perf_counter()
        list(
            coll.find(
                {
                    "$or": [
                        {
                            "identities": {
                                "$elemMatch": {"kind": "email", "value": f"u{i}@example.com"}
                            }
                        }
                        for i in few
                    ]
                }
            )
        )
        out["lookup_or_elemmatch"] = round((time.perf_counter() - started) * 1000 / len(few), 3)
        return out
    finally:
        client.drop_database(db.name)
        client.close()
