"""Every write API refuses an oversized body (413) and explains an invalid one (422)."""

from __future__ import annotations

from typing import Any

import httpx
from starlette.applications import Starlette

from services.router.http import make_routes
from shared.settings import RouterSettings
from tests.support.access import memory_access
from tests.support.fakes import FakeRouterStore

AUTH = {"Authorization": "Bearer dev-token"}


class NoBroker:
    def __init__(self) -> None:
        self.published: list[Any] = []

    async def publish(self, *args: Any, **kwargs: Any) -> None:
        self.published.append(args)


async def test_router_writes_refuse_big_and_bad_bodies() -> None:
    broker = NoBroker()
    settings = RouterSettings()
    access, _ = memory_access(settings)
    routes = make_routes(settings, broker, FakeRouterStore(), access=access)  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=Starlette(routes=routes))
    async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
        big = await client.put("/v1/agents/a1", content=b"{" + b" " * 70_000 + b"}", headers=AUTH)
        assert big.status_code == 413
        bad = await client.put("/v1/agents/a1", json={"name": "", "$where": "1"}, headers=AUTH)
        assert bad.status_code == 422
        # The reasons never echo what was sent.
        assert all("input" not in d for d in bad.json()["detail"])
    assert broker.published == []
