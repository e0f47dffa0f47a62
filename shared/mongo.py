"""MongoDB client factory (PyMongo's async API; Motor reached end of life in May 2026)."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from shared.settings import ServiceSettings

Document = dict[str, Any]
Database = AsyncDatabase[Document]


def make_mongo_client(settings: ServiceSettings) -> AsyncMongoClient[Document]:
    """Build a client; nothing connects until the first operation."""
    return AsyncMongoClient(
        settings.mongo_uri,
        serverSelectionTimeoutMS=settings.mongo_timeout_ms,
        connectTimeoutMS=settings.mongo_timeout_ms,
        tz_aware=True,
        appname=f"omniroute-{settings.service_name}",
    )


async def ping(db: Database) -> None:
    await db.command("ping")
