"""What every service shares at its edge: the ASGI app with /healthz, /readyz, /metrics.

`ServiceApp` is FastStream's `AsgiFastStream` (it owns the broker's lifecycle and the
AsyncAPI document) with every HTTP request handed to a Starlette app, so services can
declare routes with path parameters next to the health and metrics endpoints.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import uvicorn
from faststream.asgi import AsgiFastStream
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from shared.asyncapi import document
from shared.settings import ServiceSettings

BodyT = TypeVar("BodyT", bound=BaseModel)
log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[None]]
READINESS_TIMEOUT_S = 2.0


def make_registry(service: str) -> CollectorRegistry:
    """A registry per service (tests run several in one process), with process metrics."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    Gauge(
        "omniroute_build_info",
        "Constant 1, labelled with the service name and version.",
        ["service", "version"],
        registry=registry,
    ).labels(service=service, version="0.1.0").set(1)
    return registry


def broker_check(broker: KafkaBroker) -> ReadinessCheck:
    async def check() -> None:
        if not await broker.ping(timeout=READINESS_TIMEOUT_S):
            raise ConnectionError("kafka unreachable")

    return check


class Readiness:
    """Named checks run on /readyz; all must pass within the timeout."""

    def __init__(self, checks: dict[str, ReadinessCheck] | None = None) -> None:
        self.checks: dict[str, ReadinessCheck] = dict(checks or {})

    async def run(self) -> dict[str, str]:
        async def one(check: ReadinessCheck) -> str:
            try:
                await asyncio.wait_for(check(), READINESS_TIMEOUT_S)
            except Exception as exc:  # any failure means not ready; the name says which
                return f"failed: {type(exc).__name__}"
            return "ok"

        names = list(self.checks)
        results = await asyncio.gather(*(one(self.checks[n]) for n in names))
        return dict(zip(names, results, strict=True))


def health_routes(registry: CollectorRegistry, readiness: Readiness) -> list[BaseRoute]:
    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        results = await readiness.run()
        ok = all(v == "ok" for v in results.values())
        return JSONResponse(
            {"status": "ready" if ok else "not ready", "checks": results},
            status_code=200 if ok else 503,
        )

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
    ]


MAX_API_BODY_BYTES = 65_536


class TooLarge(Exception):
    """The request body is over the limit (HTTP 413)."""


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, read as a stream and abandoned as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def read_body(request: Request, limit: int = MAX_API_BODY_BYTES) -> bytes | JSONResponse:
    """The body, or the 413 response to return."""
    try:
        return await read_limited(request, limit)
    except TooLarge:
        return JSONResponse({"error": "body too large"}, status_code=413)


def invalid_body(exc: ValidationError) -> JSONResponse:
    """422 with pydantic's reasons, never echoing the input."""
    return JSONResponse(
        {"error": "invalid body", "detail": exc.errors(include_input=False, include_url=False)},
        status_code=422,
    )


async def parse_body(
    request: Request, model: type[BodyT], limit: int = MAX_API_BODY_BYTES
) -> BodyT | JSONResponse:
    """The body as `model`, or the response to return (413 too large, 422 with the reason)."""
    body = await read_body(request, limit)
    if isinstance(body, JSONResponse):
        return body
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        return invalid_body(exc)


class ServiceApp(AsgiFastStream):
    """AsgiFastStream whose HTTP traffic goes to a Starlette app."""

    def __init__(
        self,
        broker: KafkaBroker,
        *,
        routes: Sequence[BaseRoute],
        on_startup: Sequence[Callable[..., Any]] = (),
        after_startup: Sequence[Callable[..., Any]] = (),
        on_shutdown: Sequence[Callable[..., Any]] = (),
        after_shutdown: Sequence[Callable[..., Any]] = (),
        title: str = "omniroute",
        specification: AsyncAPI | None = None,
    ) -> None:
        super().__init__(
            broker,
            specification=specification or document(title),
            on_startup=on_startup,
            after_startup=after_startup,
            on_shutdown=on_shutdown,
            after_shutdown=after_shutdown,
            logger=logging.getLogger("omniroute.app"),
        )
        self.http = Starlette(routes=list(routes))
        self.title = title

    async def not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.http(scope, receive, send)
            return
        await super().not_found(scope, receive, send)


def serve(app: ServiceApp, settings: ServiceSettings) -> None:
    """Run one service in the foreground until SIGINT/SIGTERM."""
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()
