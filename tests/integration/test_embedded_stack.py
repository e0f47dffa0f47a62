"""The embedded stack answers for real: Kafka metadata, topics, MongoDB."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from pymongo import AsyncMongoClient

from shared.embedded import EmbeddedStack
from shared.topics import CUSTOMERS, INBOUND_CHAT, MESSAGES, PARTITIONS, TOPIC_CONFIGS
from tests.support.procs import alive

pytestmark = pytest.mark.integration


async def test_every_topic_exists_with_its_partitions(stack: EmbeddedStack) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(list(PARTITIONS))
    finally:
        await admin.close()
    counts = {t["topic"]: len(t["partitions"]) for t in described}
    assert counts == PARTITIONS
    # Each topic keeps what the retention table says; support.customers keeps the latest
    # record per customer (Tansu takes both at creation).
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        described_configs = await admin.describe_configs(
            [
                ConfigResource(ConfigResourceType.TOPIC, t)
                for t in (CUSTOMERS, MESSAGES, INBOUND_CHAT)
            ]
        )
    finally:
        await admin.close()
    found = {
        name: {(e[0], e[1]) for e in entries}
        for response in described_configs
        for (_, _, _, name, entries) in response.resources
    }
    for topic in (CUSTOMERS, MESSAGES, INBOUND_CHAT):
        assert set(TOPIC_CONFIGS[topic].items()) <= found[topic], topic


async def test_keyed_records_round_trip_with_headers(stack: EmbeddedStack) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    await producer.start()
    try:
        meta = await producer.send_and_wait(
            "support.incidents", b"{}", key=b"k1", headers=[("ce_id", b"x1")]
        )
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap)
    await consumer.start()
    try:
        from aiokafka import TopicPartition

        tp = TopicPartition("support.incidents", meta.partition)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        record = await consumer.getone()
    finally:
        await consumer.stop()
    assert (record.key, record.headers[0]) == (b"k1", ("ce_id", b"x1"))


async def test_each_service_has_its_own_mongodb_process(stack: EmbeddedStack) -> None:
    # One SecantusDB per service: own port, own storage, own process (one lock each).
    uris = {s: stack.mongo_uri(s) for s in ("ingest", "router", "sla", "notify")}
    assert len(set(uris.values())) == 4
    for uri in uris.values():
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
        try:
            assert (await client.admin.command("ping"))["ok"] == 1
        finally:
            await client.close()
    assert set(stack.processes) == {"tansu", *(f"secantusdb-{s}" for s in uris)}
    assert len(set(stack.pids)) == 5
    assert all(alive(p) for p in stack.pids)
    # What one service writes is not on another's server.
    writer: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uris["router"])
    reader: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uris["notify"])
    try:
        await writer["isolation_probe"]["probe"].insert_one({"_id": "x"})
        assert "isolation_probe" not in await reader.list_database_names()
    finally:
        await writer.drop_database("isolation_probe")
        await writer.close()
        await reader.close()
