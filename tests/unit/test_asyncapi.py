"""Each service publishes its contract as the AsyncAPI document FastStream generates."""

from __future__ import annotations

import json

import pytest

from services.cli import asyncapi_json

EXPECTED = {
    "ingest": {
        "support.inbound.email",
        "support.inbound.social",
        "support.inbound.phone",
        "support.inbound.chat",
        "support.tickets",  # agents' corrections, for training
    },
    "router": {"support.messages", "support.agents", "support.sla"},
    "sla": {"support.tickets"},
    "notify": {"support.messages", "support.tickets", "support.sla", "support.incidents"},
}


@pytest.mark.parametrize("service", sorted(EXPECTED))
def test_asyncapi_lists_the_topics_the_service_consumes(service: str) -> None:
    doc = json.loads(asyncapi_json(service))
    assert doc["asyncapi"].startswith("3.")
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == EXPECTED[service]
    assert all(c.get("description") for c in doc["channels"].values())
