"""Router's HTTP API: tickets with their decision record, agents, and desk actions.

Writes do not touch the state directly: they publish to `support.agents`, which the
engine (whichever replica holds the lease) applies like any other input; on the lease
holder an action is applied as soon as Kafka has it (`apply_ahead`: the P1 path does not
wait for the input consumer's next fetch). An action the ticket already rules out is
refused here with the reason (404/409): as the engine's memory has it on the lease holder,
as the collections have it elsewhere (services/router/reads.py); one the engine rejects
later shows as `rejected` at `GET /v1/actions/{event_id}` and as an `action_rejected`
ticket event. A credential speaks for one agent (a JWT's subject)
unless it has `tickets:act-as`: naming another agent is refused with 403.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiokafka.structs import ConsumerRecord
from faststream.kafka import KafkaBroker
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from services.router.actions import refusal
from services.router.reads import EngineView, Reads
from services.router.store import RouterStore
from shared.access import Access, Call
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
from shared.events import OutboundEvent, make_event, send_all
from shared.ids import event_id
from shared.mongo import Document
from shared.scopes import AGENTS_ADMIN, AGENTS_READ, TICKETS_ACT, TICKETS_READ
from shared.service import BodyT, parse_body
from shared.settings import RouterSettings
from shared.topics import AGENTS

ACTIONS = ("accept", "decline", "reply", "wait", "resolve")
ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
log = logging.getLogger(__name__)


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
    settings: RouterSettings,
    broker: KafkaBroker,
    store: RouterStore,
    *,
    access: Access,
    engine: EngineView | None = None,
) -> list[BaseRoute]:
    """The API; `engine` is this replica's engine (it answers only while holding the lease)."""
    id_re = re.compile(ID_PATTERN)
    reads = Reads(store, engine)

    def path_id(request: Request, name: str) -> str | JSONResponse:
        """An id from the path, or the 400 for one that is not an id."""
        value = str(request.path_params[name])
        if not id_re.match(value):
            return JSONResponse({"error": "invalid id"}, status_code=400)
        return value

    async def found(
        request: Request, name: str, load: Callable[[str], Awaitable[Document | None]]
    ) -> Response:
        """The stored document the path names, or 400 / 404."""
        ident = path_id(request, name)
        if isinstance(ident, JSONResponse):
            return ident
        doc = await load(ident)
        if doc is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse({name: ident, **_clean(doc)})

    def agent_event_id(key: str, request: Request) -> str:
        # An Idempotency-Key makes a retried HTTP call the same event.
        idem = request.headers.get("idempotency-key")
        return event_id("agent", key, idem) if idem else f"evt_{uuid.uuid4().hex}"

    async def publish(data: BaseModel, event_type: str, key: str, eid: str) -> Any:
        """Publish to support.agents and wait for Kafka; the record's metadata (None from
        the in-memory test broker)."""
        event = make_event(
            data,
            topic=AGENTS,
            event_type=event_type,
            event_id=eid,
            source="omniroute/router-api",
            key=key,
            time=datetime.now(UTC),
        )
        acks = await asyncio.gather(*await send_all(broker, [event]))
        meta = acks[0] if acks else None
        if meta is not None and engine is not None:
            await apply_ahead(event, meta)
        return meta

    async def apply_ahead(event: OutboundEvent, meta: Any) -> None:
        """The engine on this replica applies the published action at once if it may."""
        assert engine is not None
        record = ConsumerRecord(
            topic=meta.topic,
            partition=meta.partition,
            offset=meta.offset,
            timestamp=meta.timestamp,
            timestamp_type=0,
            key=event.key.encode() if event.key is not None else None,
            value=event.value,
            checksum=None,
            serialized_key_size=-1,
            serialized_value_size=len(event.value),
            headers=tuple((k, v.encode()) for k, v in event.headers.items()),
        )
        try:
            await engine.apply_ahead(record)
        except Exception:
            # Published all the same: the input consumer applies it after the reload.
            log.exception("applying an action ahead failed", extra={"event_id": event.id})

    def not_for(call: Call, agent_id: str) -> JSONResponse | None:
        """403 when the caller may not speak for `agent_id`."""
        assert call.caller is not None
        call.note(agent_id=agent_id)
        reason = call.caller.refuses_to_act_as(agent_id)
        return call.refuse(403, reason) if reason else None

    async def get_ticket(request: Request, call: Call) -> Response:
        return await found(request, "ticket_id", reads.get_ticket)

    async def list_tickets(request: Request, call: Call) -> Response:
        state = request.query_params.get("state", "queued")
        if state not in ("queued", "offered", "assigned", "waiting_on_customer", "resolved"):
            return JSONResponse({"error": "unknown state"}, status_code=400)
        docs = await reads.list_tickets(state, 500)
        return JSONResponse({"tickets": [{"ticket_id": d["_id"], **_clean(d)} for d in docs]})

    async def get_agent(request: Request, call: Call) -> Response:
        return await found(request, "agent_id", reads.get_agent)

    async def id_and_body(
        request: Request, name: str, model: type[BodyT]
    ) -> tuple[str, BodyT] | JSONResponse:
        """The id the path names and the request's body, or the 400 / 413 to return."""
        ident = path_id(request, name)
        if isinstance(ident, JSONResponse):
            return ident
        data = await parse_body(request, model)
        if isinstance(data, JSONResponse):
            return data
        return ident, data

    async def agent_event(
        call: Call, request: Request, ev: AgentProfileUpdated | AgentPresenceChanged, kind: str
    ) -> Response:
        """Publish an agent's profile or presence for the engine; 202 with its event id."""
        eid = agent_event_id(ev.agent_id, request)
        await publish(ev, kind, ev.agent_id, eid)
        call.note(event_id=eid)
        return JSONResponse({"agent_id": ev.agent_id, "event_id": eid}, status_code=202)

    async def put_agent(request: Request, call: Call) -> Response:
        parsed = await id_and_body(request, "agent_id", AgentProfile)
        if isinstance(parsed, JSONResponse):
            return parsed
        aid, profile = parsed
        ev = AgentProfileUpdated(agent_id=aid, profile=profile, at=datetime.now(UTC))
        return await agent_event(call, request, ev, AGENT_PROFILE_UPDATED)

    async def post_presence(request: Request, call: Call) -> Response:
        parsed = await id_and_body(request, "agent_id", PresenceIn)
        if isinstance(parsed, JSONResponse):
            return parsed
        aid, data = parsed
        if denied := not_for(call, aid):
            return denied
        ev = AgentPresenceChanged(agent_id=aid, status=data.status, at=datetime.now(UTC))
        return await agent_event(call, request, ev, AGENT_PRESENCE_CHANGED)

    async def act(call: Call, request: Request, ev: AgentActionTaken) -> Response:
        """Refuse what the ticket rules out; else publish for the engine to apply."""
        eid = agent_event_id(ev.agent_id, request)
        retry = "idempotency-key" in request.headers
        if retry and (done := await reads.get_action(eid)) is not None:
            # A retry (same Idempotency-Key) of an action already applied: its outcome.
            call.note(event_id=eid)
            return JSONResponse(action_json(eid, done), status_code=200)
        state, holder = await reads.ticket_holder(ev.ticket_id) or (None, None)
        refused = refusal(state, holder, ev.action, ev.agent_id)
        if refused is not None:
            return call.refuse(404 if refused.kind == "not_found" else 409, refused.reason)
        await publish(ev, AGENT_ACTION_TAKEN, ev.agent_id, eid)
        call.note(event_id=eid)
        return JSONResponse(
            {
                "ticket_id": ev.ticket_id,
                "event_id": eid,
                "status": "pending",
                "status_url": f"/v1/actions/{eid}",
            },
            status_code=202,
        )

    async def act_on_ticket(
        request: Request,
        call: Call,
        model: type[BodyT],
        action: Callable[[str, BodyT], AgentActionTaken],
    ) -> Response:
        """An agent's request about a ticket: its id and body checked, then the action
        `action` makes of them published (or the refusal returned)."""
        parsed = await id_and_body(request, "ticket_id", model)
        if isinstance(parsed, JSONResponse):
            return parsed
        tid, data = parsed
        if denied := not_for(call, getattr(data, "agent_id", "")):
            return denied
        return await act(call, request, action(tid, data))

    async def post_action(request: Request, call: Call) -> Response:
        action = str(request.path_params["action"])
        if action not in ACTIONS:
            return JSONResponse({"error": "unknown action"}, status_code=404)
        return await act_on_ticket(
            request,
            call,
            ActionIn,
            lambda tid, data: AgentActionTaken(
                agent_id=data.agent_id,
                ticket_id=tid,
                action=action,  # type: ignore[arg-type]
                at=datetime.now(UTC),
                note=data.note,
            ),
        )

    async def post_category(request: Request, call: Call) -> Response:
        """An agent's correction of a ticket's category (re-prioritised by the engine)."""
        return await act_on_ticket(
            request,
            call,
            CategoryIn,
            lambda tid, data: AgentActionTaken(
                agent_id=data.agent_id,
                ticket_id=tid,
                action="recategorize",
                at=datetime.now(UTC),
                category=data.category,
            ),
        )

    async def get_action(request: Request, call: Call) -> Response:
        """accepted / rejected (with the reason) once the engine applied it, else pending."""
        eid = path_id(request, "event_id")
        if isinstance(eid, JSONResponse):
            return eid
        done = await reads.get_action(eid)
        if done is not None:
            return JSONResponse(action_json(eid, done))
        asked = await access.audit.find_event(access.service, eid)
        if asked is not None and asked["outcome"] == "ok":
            return JSONResponse(
                {"event_id": eid, "status": "pending", "requested_at": asked["at"].isoformat()}
            )
        return JSONResponse({"error": "no such action"}, status_code=404)

    return [
        access.route("GET", "/v1/tickets", list_tickets, scope=TICKETS_READ),
        access.route("POST", "/v1/tickets/{ticket_id}/category", post_category, scope=TICKETS_ACT),
        access.route("GET", "/v1/tickets/{ticket_id}", get_ticket, scope=TICKETS_READ),
        access.route("POST", "/v1/tickets/{ticket_id}/{action}", post_action, scope=TICKETS_ACT),
        access.route("GET", "/v1/actions/{event_id}", get_action, scope=TICKETS_READ),
        access.route("GET", "/v1/agents/{agent_id}", get_agent, scope=AGENTS_READ),
        access.route("PUT", "/v1/agents/{agent_id}", put_agent, scope=AGENTS_ADMIN),
        access.route("POST", "/v1/agents/{agent_id}/presence", post_presence, scope=TICKETS_ACT),
    ]


def action_json(event_id: str, done: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "status": done["status"],
        "reason": done.get("reason"),
        "ticket_id": done.get("ticket_id"),
        "agent_id": done.get("agent_id"),
        "action": done.get("action"),
        "decided_at": done["at"].isoformat() if done.get("at") else None,
    }
