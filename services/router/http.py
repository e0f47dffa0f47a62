"""Router's HTTP API: tickets with their decision record, agents, and desk actions.

Writes do not touch the state directly: they publish to `support.agents`, which the
engine (whichever replica holds the lease) applies like any other input.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from faststream.kafka import KafkaBroker
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from services.router.store import RouterStore
from shared.contracts.agents import (
    AGENT_ACTION_TAKEN,
    AGENT_PRESENCE_CHANGED,
    AGENT_PROFILE_UPDATED,
    AgentActionTaken,
    AgentPresenceChanged,
    AgentProfile,
    AgentProfileUpdated,
    Presence,
)
from shared.contracts.common import Category
from shared.events import make_event, publish_all
from shared.ids import event_id
from shared.service import invalid_body, read_body, require_token
from shared.settings import RouterSettings
from shared.topics import AGENTS

ACTIONS = ("accept", "decline", "reply", "wait", "resolve")
ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"


class CategoryIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    category: Category
    agent_id: str = Field(pattern=ID_PATTERN)


class PresenceIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    status: Presence


class ActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    agent_id: str = Field(pattern=ID_PATTERN)
    note: str | None = Field(default=None, max_length=10_000)


def _clean(doc: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in doc.items() if k != "_id"}
    for k, v in out.items():
        if isinstance(v, datetime):
            out[k] = v.isoformat()
    return out


def make_routes(
    settings: RouterSettings, broker: KafkaBroker, store: RouterStore
) -> list[BaseRoute]:
    import re

    id_re = re.compile(ID_PATTERN)

    def bad_id(value: str) -> JSONResponse | None:
        if not id_re.match(value):
            return JSONResponse({"error": "invalid id"}, status_code=400)
        return None

    async def publish(data: BaseModel, event_type: str, key: str, request: Request) -> str:
        # An Idempotency-Key makes a retried HTTP call the same event.
        idem = request.headers.get("idempotency-key")
        eid = event_id("agent", key, idem) if idem else f"evt_{uuid.uuid4().hex}"
        await publish_all(
            broker,
            [
                make_event(
                    data,
                    topic=AGENTS,
                    event_type=event_type,
                    event_id=eid,
                    source="omniroute/router-api",
                    key=key,
                    time=datetime.now(UTC),
                )
            ],
        )
        return eid

    async def get_ticket(request: Request) -> Response:
        tid = str(request.path_params["ticket_id"])
        if err := bad_id(tid):
            return err
        doc = await store.get_ticket(tid)
        if doc is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse({"ticket_id": tid, **_clean(doc)})

    async def list_tickets(request: Request) -> Response:
        state = request.query_params.get("state", "queued")
        if state not in ("queued", "offered", "assigned", "waiting_on_customer", "resolved"):
            return JSONResponse({"error": "unknown state"}, status_code=400)
        docs = await store.list_tickets(state, 500)
        return JSONResponse({"tickets": [{"ticket_id": d["_id"], **_clean(d)} for d in docs]})

    async def get_agent(request: Request) -> Response:
        aid = str(request.path_params["agent_id"])
        if err := bad_id(aid):
            return err
        doc = await store.get_agent(aid)
        if doc is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse({"agent_id": aid, **_clean(doc)})

    async def put_agent(request: Request) -> Response:
        if denied := require_token(settings, request):
            return denied
        aid = str(request.path_params["agent_id"])
        if err := bad_id(aid):
            return err
        body = await read_body(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            profile = AgentProfile.model_validate_json(body, strict=False)
        except ValidationError as exc:
            return invalid_body(exc)
        ev = AgentProfileUpdated(agent_id=aid, profile=profile, at=datetime.now(UTC))
        eid = await publish(ev, AGENT_PROFILE_UPDATED, aid, request)
        return JSONResponse({"agent_id": aid, "event_id": eid}, status_code=202)

    async def post_presence(request: Request) -> Response:
        if denied := require_token(settings, request):
            return denied
        aid = str(request.path_params["agent_id"])
        if err := bad_id(aid):
            return err
        body = await read_body(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            data = PresenceIn.model_validate_json(body)
        except ValidationError as exc:
            return invalid_body(exc)
        ev = AgentPresenceChanged(agent_id=aid, status=data.status, at=datetime.now(UTC))
        eid = await publish(ev, AGENT_PRESENCE_CHANGED, aid, request)
        return JSONResponse({"agent_id": aid, "event_id": eid}, status_code=202)

    async def post_action(request: Request) -> Response:
        if denied := require_token(settings, request):
            return denied
        tid = str(request.path_params["ticket_id"])
        action = str(request.path_params["action"])
        if action not in ACTIONS:
            return JSONResponse({"error": "unknown action"}, status_code=404)
        if err := bad_id(tid):
            return err
        body = await read_body(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            data = ActionIn.model_validate_json(body)
        except ValidationError as exc:
            return invalid_body(exc)
        ev = AgentActionTaken(
            agent_id=data.agent_id,
            ticket_id=tid,
            action=action,  # type: ignore[arg-type]
            at=datetime.now(UTC),
            note=data.note,
        )
        eid = await publish(ev, AGENT_ACTION_TAKEN, data.agent_id, request)
        return JSONResponse({"ticket_id": tid, "event_id": eid}, status_code=202)

    async def post_category(request: Request) -> Response:
        """An agent's correction of a ticket's category (re-prioritised by the engine)."""
        if denied := require_token(settings, request):
            return denied
        tid = str(request.path_params["ticket_id"])
        if err := bad_id(tid):
            return err
        body = await read_body(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            data = CategoryIn.model_validate_json(body)
        except ValidationError as exc:
            return invalid_body(exc)
        if await store.get_ticket(tid) is None:
            return JSONResponse({"error": "ticket not found"}, status_code=404)
        ev = AgentActionTaken(
            agent_id=data.agent_id,
            ticket_id=tid,
            action="recategorize",
            at=datetime.now(UTC),
            category=data.category,
        )
        eid = await publish(ev, AGENT_ACTION_TAKEN, data.agent_id, request)
        return JSONResponse({"ticket_id": tid, "event_id": eid}, status_code=202)

    return [
        Route("/v1/tickets", list_tickets, methods=["GET"]),
        Route("/v1/tickets/{ticket_id}/category", post_category, methods=["POST"]),
        Route("/v1/tickets/{ticket_id}", get_ticket, methods=["GET"]),
        Route("/v1/tickets/{ticket_id}/{action}", post_action, methods=["POST"]),
        Route("/v1/agents/{agent_id}", get_agent, methods=["GET"]),
        Route("/v1/agents/{agent_id}", put_agent, methods=["PUT"]),
        Route("/v1/agents/{agent_id}/presence", post_presence, methods=["POST"]),
    ]
