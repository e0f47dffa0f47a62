"""Ingest's HTTP edge: signed provider webhooks and the customer API.

A webhook's credential is its HMAC signature (one secret per provider): only a signed
request spends its provider's rate limit and is audited, as `webhook:<provider>`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime
from typing import Any

from aiokafka.errors import MessageSizeTooLargeError
from faststream.kafka import KafkaBroker
from pydantic import ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from services.ingest.customers_import import CustomerLine
from services.ingest.intake import customers_events
from services.ingest.metrics import IngestMetrics
from services.ingest.model import ParseError, Skipped
from services.ingest.pipeline import IngestPolicy, prepare
from services.ingest.store import CustomerStore
from shared.access import Access, Call
from shared.contracts.common import PROVIDERS_BY_CHANNEL, Channel
from shared.events import publish_all
from shared.scopes import CUSTOMERS_WRITE
from shared.service import TooLarge, read_limited
from shared.settings import IngestSettings
from shared.topics import INBOUND_BY_CHANNEL

SIGNATURE_HEADER = "x-omniroute-signature"
ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_ok(secret: str | None, body: bytes, supplied: str | None) -> bool:
    if not secret or not supplied:
        return False
    return hmac.compare_digest(sign(secret, body).encode(), supplied.strip().encode())


def make_routes(
    settings: IngestSettings,
    broker: KafkaBroker,
    customers: CustomerStore,
    policy: IngestPolicy,
    metrics: IngestMetrics,
    *,
    access: Access,
) -> list[BaseRoute]:
    guard = access

    def reply(channel: str, provider: str, code: int, body: dict[str, Any]) -> JSONResponse:
        metrics.webhooks.labels(channel, provider, str(code)).inc()
        return JSONResponse(body, status_code=code)

    async def inbound(request: Request, call: Call) -> Response:
        channel = str(request.path_params["channel"])
        provider = str(request.path_params["provider"])
        if channel not in PROVIDERS_BY_CHANNEL or provider not in PROVIDERS_BY_CHANNEL[channel]:
            return reply("unknown", "unknown", 404, {"error": "unknown channel or provider"})
        try:
            body = await read_limited(request, settings.max_body_bytes)
        except TooLarge:
            return reply(channel, provider, 413, {"error": "body too large"})
        except ClientDisconnect:
            return reply(channel, provider, 400, {"error": "client disconnected"})
        secret = settings.webhook_secrets.get(provider)
        supplied = request.headers.get(SIGNATURE_HEADER)
        if not signature_ok(secret.get_secret_value() if secret else None, body, supplied):
            return reply(channel, provider, 401, {"error": "bad or missing signature"})
        if limited := guard.admit(call, guard.webhook_caller(provider)):
            metrics.webhooks.labels(channel, provider, "429").inc()
            return limited
        if not body:
            return reply(channel, provider, 400, {"error": "empty body"})
        ch: Channel = channel
        try:
            results = prepare(ch, provider, body, policy.parser)
        except ParseError as exc:
            return reply(channel, provider, 422, {"error": exc.reason})
        accepted = [r for r in results if not isinstance(r, Skipped)]
        skipped = [r.reason for r in results if isinstance(r, Skipped)]
        if accepted:
            # The raw payload goes through the same consumer path as adapters' messages.
            try:
                await broker.publish(
                    body,
                    INBOUND_BY_CHANNEL[ch],
                    key=accepted[0].conversation_id.encode(),
                    headers={"provider": provider},
                )
            except MessageSizeTooLargeError:
                # Within max_body_bytes but not within the producer's (or broker's) record
                # limit, once key and headers are added: nothing was published.
                return reply(channel, provider, 413, {"error": "body too large to forward"})
        call.note(message_ids=[r.message_id for r in accepted])
        return reply(
            channel,
            provider,
            202,
            {"message_ids": [r.message_id for r in accepted], "skipped": skipped},
        )

    async def put_customer(request: Request, call: Call) -> Response:
        try:
            body = await read_limited(request, 65_536)
            data = CustomerLine.model_validate_json(body)
        except TooLarge:
            return JSONResponse({"error": "body too large"}, status_code=413)
        except ValidationError as exc:
            return JSONResponse(
                {"error": "invalid customer", "detail": exc.errors(include_input=False)},
                status_code=422,
            )
        cid = str(request.path_params["customer_id"])
        if not ID_RE.match(cid):
            return JSONResponse({"error": "invalid customer id"}, status_code=400)
        now = datetime.now(UTC)
        stored = await customers.upsert(data.record().with_id(cid))
        # Acknowledged by the broker before the answer: a 200 means services will hear of it.
        await publish_all(broker, customers_events([stored], now))
        return JSONResponse({"customer_id": cid, "version": stored.version, "at": now.isoformat()})

    return [
        access.signed("POST", "/v1/inbound/{channel}/{provider}", inbound),
        access.route("PUT", "/v1/customers/{customer_id}", put_customer, scope=CUSTOMERS_WRITE),
    ]
