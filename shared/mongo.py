"""MongoDB client factory (PyMongo's async API; Motor reached end of life in May 2026)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from pymongo import AsyncMongoClient, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from shared.settings import ServiceSettings

# MongoDB's error code for a unique index violation (a redelivered insert).
DUPLICATE_KEY = 11000

# Collections the shared kit keeps in the database of each service that uses it (every
# service its own copy): API audit records (shared/audit.py), engine leases (shared/lease.py).
KIT_COLLECTIONS: tuple[str, ...] = ("api_audit", "leases", "legal_holds")

Document = dict[str, Any]
Database = AsyncDatabase[Document]
log = logging.getLogger(__name__)


def make_mongo_client(settings: ServiceSettings) -> AsyncMongoClient[Document]:
    """Build a client; nothing connects until the first operation."""
    return AsyncMongoClient(
        settings.mongo_uri,
        serverSelectionTimeoutMS=settings.mongo_timeout_ms,
        connectTimeoutMS=settings.mongo_timeout_ms,
        tz_aware=True,
        retryWrites=settings.mongo_retry_writes,
        appname=f"omniroute-{settings.service_name}",
    )


async def ping(db: Database) -> None:
    await db.command("ping")


async def ensure_only_indexes(
    collection: AsyncCollection[Document], indexes: Sequence[IndexModel]
) -> None:
    """Create the indexes a store declares and drop every other secondary index on its
    collection (one an older version declared): each costs every write (on SecantusDB
    ~0.1 ms a document), so only the indexes a query uses stay."""
    declared = set(await collection.create_indexes(list(indexes))) if indexes else set()
    for name in await collection.index_information():
        if name != "_id_" and name not in declared:
            await collection.drop_index(name)
            log.info("index dropped", extra={"collection": collection.name, "index": name})


@dataclass
class StoreBackoff:
    """Pauses a consumer whose batch failed on MongoDB before the batch is redelivered.

    With `AckPolicy.NACK_ON_ERROR` FastStream seeks back and polls the same records again
    at once: a store that fails fast (no primary, disk full, a dropped connection) would
    make that a busy loop logging a traceback per pass. Nothing is committed either way;
    the pause doubles per failed batch up to `max_s` and resets on the first success.
    """

    errors: Counter
    base_s: float = 0.5
    max_s: float = 5.0
    failures: int = 0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    @classmethod
    def create(cls, service: str, registry: CollectorRegistry) -> StoreBackoff:
        return cls(
            Counter(
                f"omniroute_{service}_store_errors_total",
                "Input batches that failed on a MongoDB error; each is redelivered after a"
                " pause, its offsets not committed.",
                registry=registry,
            )
        )

    def delay_s(self) -> float:
        return float(min(self.max_s, self.base_s * 2 ** max(0, self.failures - 1)))

    @contextlib.asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Wrap a handler's body: a MongoDB error pauses, then propagates (NACK)."""
        try:
            yield
        except PyMongoError as exc:
            self.failures += 1
            self.errors.inc()
            delay = self.delay_s()
            log.warning(
                "store error: batch not committed, redelivered after a pause",
                extra={"error": type(exc).__name__, "failures": self.failures, "pause_s": delay},
            )
            await self.sleep(delay)
            raise
        self.failures = 0
