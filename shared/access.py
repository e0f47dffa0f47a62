"""Access to every service's API, declared once per route with the scope it needs.

    access.route("POST", "/v1/incidents", create, scope=INCIDENTS_WRITE)

builds a Starlette route whose requests are, in this order: authenticated (401), rate
limited per caller (429 with Retry-After), checked for the scope (403), handled, counted
in `omniroute_<service>_api_requests_total{route, outcome}` and, for writes, recorded in
the audit log. Unauthenticated and rate-limited requests are counted, not recorded, so a
flood costs no store write. Webhooks carry their own credential (an HMAC signature the
handler checks on the raw body): `access.signed(...)` leaves that to the handler, which
then `admit`s the provider as the caller (only signed requests spend a provider's bucket,
so nobody can exhaust it with unsigned ones).

Only /healthz, /readyz, /metrics, /v1/banners and /status are built without `access`
(`PUBLIC_PATHS`); a test walks every service's routes and holds each to this.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from prometheus_client import CollectorRegistry, Counter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shared.audit import AuditEntry, AuditLog, Target, pseudonym
from shared.auth import Authenticator, Caller, Unauthenticated
from shared.ratelimit import Rate, RateLimiter
from shared.scopes import Scope
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)
AUDIT_TIMEOUT_S = 1.0

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/v1/banners", "/status"})
READS = frozenset({"GET", "HEAD"})
# Path parameters that identify a person: audited as a pseudonymous reference.
PERSONAL_PARAMS = frozenset({"customer_id"})

Credential = Literal["bearer", "signature"]


@dataclass
class Call:
    """One request as the audit log sees it: who, and which ids it concerned."""

    caller: Caller | None = None
    targets: dict[str, Target] = field(default_factory=dict)
    reason: str | None = None

    def note(self, **ids: Target) -> None:
        self.targets.update(ids)

    def refuse(self, status: int, reason: str) -> JSONResponse:
        """A refusal with its reason, which the audit record keeps too (fixed texts only)."""
        self.reason = reason
        return JSONResponse({"error": reason}, status_code=status)


Handler = Callable[[Request, Call], Awaitable[Response]]


class GuardedRoute(Route):
    """A route built by `Access`: what it needs is on the route, for tests and docs."""

    def __init__(
        self,
        method: str,
        path: str,
        endpoint: Callable[[Request], Awaitable[Response]],
        *,
        scope: Scope | None,
        credential: Credential,
        access: Access,
    ) -> None:
        super().__init__(path, endpoint, methods=[method])
        self.method = method
        self.required_scope = scope
        self.credential = credential
        self.access = access


def outcome_of(status: int) -> str:
    if status < 400:
        return "ok"
    return {401: "unauthenticated", 403: "forbidden", 429: "limited"}.get(
        status, "refused" if status < 500 else "error"
    )


@dataclass(frozen=True)
class AccessMetrics:
    requests: Counter
    audit_failures: Counter

    @classmethod
    def create(cls, service: str, registry: CollectorRegistry) -> AccessMetrics:
        return cls(
            requests=Counter(
                f"omniroute_{service}_api_requests_total",
                "API requests by route and outcome (ok, unauthenticated, forbidden, limited,"
                " refused, error).",
                ["route", "outcome"],
                registry=registry,
            ),
            audit_failures=Counter(
                f"omniroute_{service}_api_audit_failures_total",
                "Write requests whose audit record could not be stored (logged instead).",
                registry=registry,
            ),
        )


@dataclass
class Access:
    service: str
    authenticator: Authenticator
    audit: AuditLog
    metrics: AccessMetrics
    webhook_rate: Rate
    limiter: RateLimiter = field(default_factory=RateLimiter)
    monotonic: Callable[[], float] = time.monotonic
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    @classmethod
    def create(cls, settings: ServiceSettings, audit: AuditLog, metrics: AccessMetrics) -> Access:
        return cls(
            service=settings.service_name,
            authenticator=Authenticator.from_settings(settings),
            audit=audit,
            metrics=metrics,
            webhook_rate=Rate(settings.webhook_rate_per_s, settings.webhook_rate_burst),
        )

    def route(self, method: str, path: str, handler: Handler, *, scope: Scope) -> GuardedRoute:
        """A route that needs a bearer credential with `scope`."""
        name = f"{method} {path}"

        async def endpoint(request: Request) -> Response:
            call = Call(targets=targets_of(request))
            try:
                call.caller = self.authenticator.authenticate(request.headers.get("authorization"))
            except Unauthenticated as exc:
                unauthenticated = JSONResponse(
                    {"error": exc.reason},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="omniroute"'},
                )
                return await self._finish(name, method, call, unauthenticated)
            if limited := self._limit(call.caller):
                return await self._finish(name, method, call, limited)
            response: Response
            if not call.caller.has(scope):
                response = call.refuse(403, f"this credential lacks the scope {scope}")
            else:
                response = await self._handle(name, method, handler, request, call)
            return await self._finish(name, method, call, response)

        return GuardedRoute(method, path, endpoint, scope=scope, credential="bearer", access=self)

    def signed(self, method: str, path: str, handler: Handler) -> GuardedRoute:
        """A webhook route: the handler checks the signature, then `admit`s its caller."""
        name = f"{method} {path}"

        async def endpoint(request: Request) -> Response:
            call = Call(targets=targets_of(request))
            response = await self._handle(name, method, handler, request, call)
            return await self._finish(name, method, call, response)

        return GuardedRoute(method, path, endpoint, scope=None, credential="signature", access=self)

    def admit(self, call: Call, caller: Caller) -> Response | None:
        """A webhook's signature checked out: `caller` is who sent it; 429 if over its rate."""
        call.caller = caller
        return self._limit(caller)

    def webhook_caller(self, provider: str) -> Caller:
        return Caller(f"webhook:{provider}", provider, rate=self.webhook_rate)

    def _limit(self, caller: Caller) -> Response | None:
        if caller.rate is None:
            return None
        wait_s = self.limiter.take(caller.principal, caller.rate, self.monotonic())
        if wait_s <= 0:
            return None
        return JSONResponse(
            {"error": "rate limit exceeded", "retry_after_s": round(wait_s, 3)},
            status_code=429,
            headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
        )

    async def _handle(
        self, name: str, method: str, handler: Handler, request: Request, call: Call
    ) -> Response:
        try:
            return await handler(request, call)
        except Exception:
            # Counted and audited as an error; the server answers 500 as before.
            await self._finish(name, method, call, Response(status_code=500))
            raise

    async def _finish(self, name: str, method: str, call: Call, response: Response) -> Response:
        status = response.status_code
        outcome = outcome_of(status)
        self.metrics.requests.labels(route=name, outcome=outcome).inc()
        if method in READS or call.caller is None or status == 429:
            return response
        entry = AuditEntry(
            at=self.clock(),
            service=self.service,
            caller=call.caller.principal,
            client=call.caller.client,
            route=name,
            outcome=outcome,
            status=status,
            targets=call.targets,
            reason=call.reason,
        )
        try:
            # Bounded: a store that hangs must not hold the caller (the write itself, a
            # Kafka publish, went through); the record is then logged instead.
            await asyncio.wait_for(self.audit.record(entry), AUDIT_TIMEOUT_S)
        except Exception:
            self.metrics.audit_failures.inc()
            log.exception(
                "audit record not stored",
                extra={"route": name, "caller": entry.caller, "status": status},
            )
        return response


def targets_of(request: Request) -> dict[str, Target]:
    """The path's ids, personal ones as pseudonymous references."""
    out: dict[str, Target] = {}
    for name, value in request.path_params.items():
        if name in PERSONAL_PARAMS:
            out[name.removesuffix("_id") + "_ref"] = pseudonym(str(value))
        else:
            out[name] = str(value)[:128]
    return out
