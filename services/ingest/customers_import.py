"""`omniroute customers import FILE`: load the exchange's customers (JSON lines) into MongoDB
and publish each one's record on support.customers (so notify's copy follows).

One customer per line:
    {"customer_id": "uid-1001", "identities": [{"kind": "email", "value": "a@b.c"},
     {"kind": "account_uid", "value": "1001"}], "tier": "vip2", "anti_phishing_code": "Kx7…"}
Invalid lines are reported by number with the reason (never their content) and skipped.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.ingest.customers import CustomerRecord
from services.ingest.intake import customers_events
from services.ingest.store import MongoCustomerStore
from shared.broker import ensure_topics, make_broker
from shared.contracts.messages import Identity
from shared.events import publish_all
from shared.mongo import make_mongo_client
from shared.settings import IngestSettings

BATCH = 500


class CustomerLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    customer_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
    identities: tuple[Identity, ...] = Field(min_length=1, max_length=50)
    tier: str = Field(default="standard", pattern=r"^(standard|vip[1-9])$")
    anti_phishing_code: str | None = Field(default=None, min_length=4, max_length=32)
    language: str | None = Field(
        default=None,
        pattern=r"^[a-z]{2}$",
        description="Preferred language (ISO 639-1): very short messages are read in it",
    )

    @field_validator("identities")
    @classmethod
    def _normalise(cls, ids: tuple[Identity, ...]) -> tuple[Identity, ...]:
        return tuple(
            Identity(
                kind=i.kind, value=i.value.strip().lower() if i.kind == "email" else i.value.strip()
            )
            for i in ids
        )

    def record(self) -> CustomerRecord:
        return CustomerRecord(
            self.customer_id, self.identities, self.tier, self.anti_phishing_code, self.language
        )


@dataclass
class ImportReport:
    imported: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)


def parse_lines(lines: list[str]) -> tuple[list[CustomerRecord], list[tuple[int, str]]]:
    records: list[CustomerRecord] = []
    rejected: list[tuple[int, str]] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(CustomerLine.model_validate_json(line).record())
        except ValidationError as exc:
            first = exc.errors(include_input=False, include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "line"
            rejected.append((n, f"{where}: {first['msg']}"))
    return records, rejected


async def import_customers(
    records: list[CustomerRecord],
    settings: IngestSettings,
    broker: KafkaBroker | None = None,
) -> int:
    """Store each batch, then publish its records (acknowledged) before the next batch: an
    import stopped half-way and run again republishes what it stores again, nothing lost."""
    client = make_mongo_client(settings)
    broker = broker or make_broker(settings, CollectorRegistry())
    try:
        if settings.kafka_create_topics:
            await ensure_topics(settings.kafka_bootstrap)
        await broker.start()
        store = MongoCustomerStore(client[settings.mongo_db])
        await store.ensure_indexes()
        for start in range(0, len(records), BATCH):
            stored = await store.upsert_many(records[start : start + BATCH])
            await publish_all(broker, customers_events(stored, datetime.now(UTC)))
    finally:
        await broker.stop()
        await client.close()
    return len(records)


def main(path: str) -> int:
    records, rejected = parse_lines(Path(path).read_text("utf-8", errors="replace").splitlines())
    report = ImportReport(asyncio.run(import_customers(records, IngestSettings())), rejected)
    for n, reason in report.rejected:
        print(f"line {n}: {reason}", file=sys.stderr)
    print(f"imported {report.imported} customers, rejected {len(report.rejected)} lines")
    return 1 if report.rejected else 0
