"""Notify's HTTP API: incidents (ops), banners (websites and apps), the status page.

Writes store the incident and publish it on `support.incidents`; telling customers is
the incidents consumer's job (any replica, once), not this handler's.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from faststream.kafka import KafkaBroker
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from services.notify.incidents import (
    IncidentIn,
    IncidentPatch,
    incident_json,
    new_incident,
    patched,
)
from services.notify.pages import banners, choose_language, etag_of, json_bytes, status_html
from services.notify.render import Templates
from services.notify.store.incidents import IncidentStore
from shared.access import Access, Call
from shared.contracts.incidents import Incident, incident_event_type
from shared.events import OutboundEvent, make_event, publish_all
from shared.ids import event_id, stable_id
from shared.scopes import INCIDENTS_READ, INCIDENTS_WRITE
from shared.service import parse_body
from shared.settings import NotifySettings
from shared.topics import INCIDENTS

ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
CACHE_S = 30
CAS_RETRIES = 5


def incident_event(incident: Incident) -> OutboundEvent:
    return make_event(
        incident,
        topic=INCIDENTS,
        event_type=incident_event_type(incident),
        event_id=event_id("incident", incident.incident_id, str(incident.version)),
        source="omniroute/notify-api",
        key=incident.incident_id,
        time=incident.updated_at,
        subject=incident.incident_id,
    )


def make_routes(
    settings: NotifySettings,
    broker: KafkaBroker,
    store: IncidentStore,
    templates: Templates,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    *,
    access: Access,
) -> list[BaseRoute]:
    async def create(request: Request, call: Call) -> Response:
        data = await parse_body(request, IncidentIn)
        if isinstance(data, JSONResponse):
            return data
        # An Idempotency-Key makes a retried POST the same incident.
        idem = request.headers.get("idempotency-key")
        iid = stable_id("inc", idem, length=16) if idem else f"inc_{uuid.uuid4().hex[:16]}"
        incident = new_incident(iid, data, clock())
        call.note(incident_id=iid)
        if not await store.insert(incident):
            existing = await store.get(iid)
            if existing is None:
                return JSONResponse({"error": "conflict"}, status_code=409)
            # The first call may have stored it and failed to publish: publish again.
            await publish_all(broker, [incident_event(existing)])
            return JSONResponse(incident_json(existing), status_code=200)
        await publish_all(broker, [incident_event(incident)])
        return JSONResponse(incident_json(incident), status_code=201)

    async def update(request: Request, call: Call) -> Response:
        iid = str(request.path_params["incident_id"])
        if not ID_PATTERN.match(iid):
            return JSONResponse({"error": "invalid id"}, status_code=400)
        patch = await parse_body(request, IncidentPatch)
        if isinstance(patch, JSONResponse):
            return patch
        for _ in range(CAS_RETRIES):
            current = await store.get(iid)
            if current is None:
                return JSONResponse({"error": "not found"}, status_code=404)
            nxt = patched(current, patch, clock())
            if await store.replace(nxt, current.version):
                await publish_all(broker, [incident_event(nxt)])
                return JSONResponse(incident_json(nxt))
        return JSONResponse({"error": "concurrent updates, try again"}, status_code=409)

    async def get_one(request: Request, call: Call) -> Response:
        iid = str(request.path_params["incident_id"])
        if not ID_PATTERN.match(iid):
            return JSONResponse({"error": "invalid id"}, status_code=400)
        incident = await store.get(iid)
        if incident is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        linked = await store.linked_count(iid)
        return JSONResponse({**incident_json(incident), "linked_tickets": linked})

    async def list_all(request: Request, call: Call) -> Response:
        since = clock() - timedelta(days=settings.notify_status_recent_days)
        found = await store.recent(since)
        found.sort(key=lambda i: i.updated_at, reverse=True)
        return JSONResponse({"incidents": [incident_json(i) for i in found]})

    async def get_banners(request: Request) -> Response:
        lang = choose_language(
            request.query_params.get("locale"), request.headers.get("accept-language")
        )
        payload = json_bytes(banners(await store.open(), lang, templates))
        etag = etag_of(payload)
        headers = {
            "Cache-Control": f"public, max-age={CACHE_S}",
            "ETag": etag,
            # Public data for the exchange's own sites and apps, on any origin.
            "Access-Control-Allow-Origin": "*",
            "Vary": "Accept-Language",
        }
        if etag in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}:
            return Response(status_code=304, headers=headers)
        return Response(payload, media_type="application/json", headers=headers)

    async def status_page(request: Request) -> Response:
        lang = choose_language(
            request.query_params.get("lang"), request.headers.get("accept-language")
        )
        now = clock()
        since = now - timedelta(days=settings.notify_status_recent_days)
        recent = await store.recent(since)
        html = status_html(recent, recent, lang, templates, now)
        return HTMLResponse(
            html,
            headers={
                "Cache-Control": f"public, max-age={CACHE_S}",
                "Content-Language": "zh-Hans" if lang == "zh" else lang,
                "Vary": "Accept-Language",
            },
        )

    return [
        access.route("POST", "/v1/incidents", create, scope=INCIDENTS_WRITE),
        access.route("GET", "/v1/incidents", list_all, scope=INCIDENTS_READ),
        access.route("PATCH", "/v1/incidents/{incident_id}", update, scope=INCIDENTS_WRITE),
        access.route("GET", "/v1/incidents/{incident_id}", get_one, scope=INCIDENTS_READ),
        # Public: the exchange's sites and apps, and its customers, read these.
        Route("/v1/banners", get_banners, methods=["GET"]),
        Route("/status", status_page, methods=["GET"]),
    ]
