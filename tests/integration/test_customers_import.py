"""Loading the exchange's customers: bulk import and the API, on real SecantusDB."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.ingest.customers import CustomerRecord
from services.ingest.customers_import import import_customers, parse_lines
from services.ingest.store import MongoCustomerStore
from shared.contracts.messages import Identity
from shared.settings import IngestSettings
from shared.topics import CUSTOMERS
from tests.support.factories import T0
from tests.support.kafka import read_all

pytestmark = pytest.mark.integration


def line(**fields: Any) -> str:
    return json.dumps(fields)


def test_invalid_lines_are_reported_by_number_without_content() -> None:
    lines = [
        line(customer_id="uid-1", identities=[{"kind": "email", "value": "A@Example.com"}]),
        line(identities=[]),
        "{not json",
        line(identities=[{"kind": "email", "value": "x@y.z"}], tier="platinum"),
        line(identities=[{"kind": "email", "value": "x@y.z"}], **{"$where": "1"}),
        "",
    ]
    records, rejected = parse_lines(lines)
    assert [r.customer_id for r in records] == ["uid-1"]
    assert records[0].identities[0].value == "a@example.com"
    assert [n for n, _ in rejected] == [2, 3, 4, 5]
    assert all("Example" not in reason and "x@y.z" not in reason for _, reason in rejected)


async def test_import_takes_over_identities_ingest_saw_first(ingest_db: Any, stack: Any) -> None:
    store = MongoCustomerStore(ingest_db)
    await store.ensure_indexes()
    # Someone wrote in before the exchange loaded its customers: an automatic customer.
    email = Identity(kind="email", value="mei@example.com")
    [auto] = await store.resolve_many([(email, Identity(kind="chat_visitor", value="v1"))], T0)
    records, _ = parse_lines(
        [
            line(
                customer_id="uid-1001",
                tier="vip2",
                anti_phishing_code="Kx7pQ",
                identities=[
                    {"kind": "email", "value": "mei@example.com"},
                    {"kind": "account_uid", "value": "1001"},
                ],
            ),
        ]
    )
    settings = IngestSettings(
        mongo_uri=stack.mongo_uri("ingest"),
        mongo_db=ingest_db.name,
        kafka_bootstrap=stack.kafka_bootstrap,
    )
    assert await import_customers(records, settings) == 1
    [after] = await store.resolve_many([(email,)], T0)
    assert after.customer_id == "uid-1001"
    assert (after.tier, after.anti_phishing_code) == ("vip2", "Kx7pQ")
    imported = await ingest_db["customers"].find_one({"_id": "uid-1001"})
    assert imported["merged_from"] == [auto.customer_id]
    old = await ingest_db["customers"].find_one({"_id": auto.customer_id})
    assert old["identities"] == [{"kind": "chat_visitor", "value": "v1"}]
    # Importing again adds no customer; each import restates the customer, a new version.
    await import_customers(records, settings)
    assert await ingest_db["customers"].count_documents({}) == 2
    # Each import published the customer's record on support.customers, keyed by its id.
    published = [
        (r.key, json.loads(r.value))
        for r in await read_all(stack.kafka_bootstrap, [CUSTOMERS])
        if r.key == b"uid-1001"
    ]
    assert [body["version"] for _, body in published] == [1, 2]
    assert all(
        (body["tier"], body["anti_phishing_code"]) == ("vip2", "Kx7pQ") for _, body in published
    )


async def test_one_batch_applies_its_records_in_order(ingest_db: Any) -> None:
    store = MongoCustomerStore(ingest_db)
    await store.ensure_indexes()
    email = Identity(kind="email", value="kim@example.com")
    uid = Identity(kind="account_uid", value="7")
    # In one batch: uid-a with the email, then uid-b restating the same email (it moved).
    refs = await store.upsert_many(
        [
            CustomerRecord(customer_id="uid-a", identities=(email, uid)),
            CustomerRecord(customer_id="uid-b", identities=(email,), tier="vip1"),
        ]
    )
    assert [(r.customer_id, r.version) for r in refs] == [("uid-a", 1), ("uid-b", 1)]
    [owner] = await store.resolve_many([(email,)], T0)
    assert (owner.customer_id, owner.tier) == ("uid-b", "vip1")
    a = await ingest_db["customers"].find_one({"_id": "uid-a"})
    assert a["identity_keys"] == ["account_uid:7"]
    b = await ingest_db["customers"].find_one({"_id": "uid-b"})
    assert (b["identity_keys"], b["merged_from"]) == (["email:kim@example.com"], ["uid-a"])
