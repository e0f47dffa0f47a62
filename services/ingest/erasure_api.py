"""Ingest's erasure and legal-hold API (bearer credential with the `erasure:write` scope).

    POST /v1/erasures {"customer_id": "cus_…" | "identity": {"kind", "value"}, "reason"}
        -> 202 {"erasure_id", "state": "pending" | "held"}
    GET  /v1/erasures/{erasure_id} -> the request and each service's state
    PUT  /v1/customers/{customer_id}/hold {"hold": true | false, "reason"} -> 200

Every call is in the API audit log (who, when, the route and the erasure id; the
customer only as a pseudonymous reference) and a held customer's erasure is recorded as
held: nothing is published, nothing erased.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Self

from faststream.kafka import KafkaBroker
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from services.ingest.erasure import ErasureStore, erasure_view, new_erasure_id
from shared.access import Access, Call
from shared.contracts.common import IdentityKind
from shared.contracts.erasures import ErasureRequested
from shared.erasure import hold_event, requested_event
from shared.events import publish_all
from shared.scopes import ERASURE_WRITE
from shared.service import parse_body


class IdentityRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: IdentityKind
    value: str = Field(min_length=1, max_length=320)


class ErasureBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
    identity: IdentityRef | None = None
    reason: str = Field(min_length=1, max_length=200)

    @model_validator(mode="after")
    def _one_subject(self) -> Self:
        if (self.customer_id is None) == (self.identity is None):
            # A custom error keeps the 422's detail JSON (a ValueError's context is not).
            raise PydanticCustomError("one_subject", "give exactly one of customer_id and identity")
        return self


class HoldBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hold: bool
    reason: str = Field(default="", max_length=200)


def make_erasure_routes(
    broker: KafkaBroker, store: ErasureStore, *, access: Access
) -> list[BaseRoute]:
    async def request_erasure(request: Request, call: Call) -> Response:
        body = await parse_body(request, ErasureBody)
        if isinstance(body, JSONResponse):
            return body
        if body.identity is not None:
            cid = await store.resolve(body.identity.kind, body.identity.value)
        else:
            cid = body.customer_id if await store.known(body.customer_id or "") else None
        if cid is None:
            return call.refuse(404, "no such customer")
        caller = call.caller.principal if call.caller else "unknown"
        req = ErasureRequested(
            erasure_id=new_erasure_id(),
            customer_id=cid,
            reason=body.reason,
            requested_by=caller,
            at=datetime.now(UTC),
        )
        held = bool(await store.held([cid]))
        # Logged before it is published: a request is never done without its record.
        await store.open(req, held)
        if not held:
            await publish_all(broker, [requested_event(req)])
        call.note(erasure_id=req.erasure_id, outcome="held" if held else "requested")
        state = "held" if held else "pending"
        return JSONResponse({"erasure_id": req.erasure_id, "state": state}, status_code=202)

    async def get_erasure(request: Request, call: Call) -> Response:
        doc = await store.get(str(request.path_params["erasure_id"]))
        if doc is None:
            return call.refuse(404, "no such erasure")
        view = erasure_view(doc)
        return JSONResponse(
            {
                **view,
                "at": view["at"].isoformat(),
                "services": {
                    svc: {**s, "at": s["at"].isoformat()} if "at" in s else s
                    for svc, s in view["services"].items()
                },
            }
        )

    async def put_hold(request: Request, call: Call) -> Response:
        body = await parse_body(request, HoldBody)
        if isinstance(body, JSONResponse):
            return body
        cid = str(request.path_params["customer_id"])
        change = await store.set_hold(cid, body.hold, datetime.now(UTC))
        if change is None:
            return call.refuse(404, "no such customer")
        await publish_all(broker, [hold_event(change.model_copy(update={"reason": body.reason}))])
        call.note(hold="on" if body.hold else "off", version=str(change.version))
        return JSONResponse(
            {"customer_id": cid, "hold": body.hold, "version": change.version},
        )

    return [
        access.route("POST", "/v1/erasures", request_erasure, scope=ERASURE_WRITE),
        access.route("GET", "/v1/erasures/{erasure_id}", get_erasure, scope=ERASURE_WRITE),
        access.route("PUT", "/v1/customers/{customer_id}/hold", put_hold, scope=ERASURE_WRITE),
    ]
