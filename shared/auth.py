"""Who is calling: named API keys, desk JWTs and the development key, for every service's API.

Credentials, all as `Authorization: Bearer …`:
- a named key, `<key id>.<secret>`: the key id picks the entry of `OMNIROUTE_API_KEYS`
  (client, SHA-256 of the secret, scopes); the digests are compared in constant time;
- a JWT from the exchange's OIDC provider (`OMNIROUTE_JWT_*`): issuer, audience, expiry and
  signature checked; the subject (or `OMNIROUTE_JWT_AGENT_CLAIM`) is the acting agent and
  the `scope` / `scp` claim its scopes;
- in development only, `OMNIROUTE_API_TOKEN` (default `dev-token`): every scope.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from shared.ratelimit import Rate
from shared.scopes import SCOPES, TICKETS_ACT_AS
from shared.settings import KEY_ID_PATTERN, ApiKey, ServiceSettings

MIN_SECRET_CHARS = 32
AGENT_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")  # as the router's ids
# Compared against when the key id is unknown, so both cases take the same time.
_NO_KEY = hashlib.sha256(b"no such key").hexdigest()


class Unauthenticated(Exception):
    """No credential, or one that does not check out (HTTP 401)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Caller:
    """An authenticated caller. `principal` names it in audit records and rate limits."""

    principal: str  # "key:<key id>" | "jwt:<subject>" | "development" | "webhook:<provider>"
    client: str  # the key's client, "oidc", "development", or the webhook's provider
    scopes: frozenset[str] = field(default_factory=frozenset)
    agent_id: str | None = None  # a JWT's subject: the agent it speaks for
    rate: Rate | None = None  # None: not limited (the development key)

    def has(self, scope: str) -> bool:
        return scope in self.scopes

    def refuses_to_act_as(self, agent_id: str) -> str | None:
        """Why this caller may not act for `agent_id` (HTTP 403), or None if it may."""
        if self.has(TICKETS_ACT_AS):
            return None
        if self.agent_id is None:
            return f"this credential acts for no agent: naming {agent_id} needs tickets:act-as"
        if self.agent_id != agent_id:
            return f"the token is {self.agent_id}'s: it cannot act as {agent_id}"
        return None


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key(
    key_id: str, client: str, scopes: tuple[str, ...], *, development: bool = False
) -> tuple[str, ApiKey]:
    """(the bearer token to give the client, the entry for OMNIROUTE_API_KEYS)."""
    if not re.fullmatch(KEY_ID_PATTERN, key_id):
        raise ValueError(f"key ids must match {KEY_ID_PATTERN}: {key_id!r}")
    secret = secrets.token_urlsafe(32)
    entry = ApiKey.model_validate(
        {"client": client, "sha256": digest(secret), "scopes": scopes, "development": development}
    )
    return f"{key_id}.{secret}", entry


@dataclass(frozen=True)
class JwtVerifier:
    issuer: str
    audience: str
    keys: dict[str, Any]  # kid -> public key ("" for a single PEM key)
    algorithms: tuple[str, ...]
    agent_claim: str
    leeway_s: float
    rate: Rate

    @classmethod
    def from_settings(cls, settings: ServiceSettings, rate: Rate) -> JwtVerifier | None:
        text = (settings.jwt_public_key or "").strip()
        if not text or settings.jwt_issuer is None or settings.jwt_audience is None:
            return None
        keys: dict[str, Any]
        if text.startswith("{"):
            jwks = jwt.PyJWKSet.from_dict(json.loads(text))
            keys = {k.key_id or "": k.key for k in jwks}
        else:
            keys = {"": load_pem_public_key(text.encode())}
        return cls(
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            keys=keys,
            algorithms=settings.jwt_algorithms,
            agent_claim=settings.jwt_agent_claim,
            leeway_s=settings.jwt_leeway_s,
            rate=rate,
        )

    def verify(self, token: str) -> Caller:
        try:
            kid = jwt.get_unverified_header(token).get("kid") or ""
            key = self.keys.get(kid)
            if key is None and len(self.keys) == 1 and (not kid or "" in self.keys):
                key = next(iter(self.keys.values()))  # one key: a `kid` is not needed
            if key is None:
                raise Unauthenticated("token signed by an unknown key")
            claims = jwt.decode(
                token,
                key,
                algorithms=list(self.algorithms),
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {type(exc).__name__}") from exc
        agent = claims.get(self.agent_claim)
        if not isinstance(agent, str) or not AGENT_ID_RE.match(agent):
            raise Unauthenticated(f"invalid token: no usable {self.agent_claim} claim")
        return Caller(
            principal=f"jwt:{agent}",
            client="oidc",
            scopes=scopes_of(claims),
            agent_id=agent,
            rate=self.rate,
        )


def scopes_of(claims: dict[str, Any]) -> frozenset[str]:
    """Known scopes from `scope` (space-separated, RFC 8693) or `scp` (a list or a string)."""
    found: set[str] = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, list):
            found.update(v for v in value if isinstance(v, str))
    return frozenset(found.intersection(SCOPES))


@dataclass(frozen=True)
class Authenticator:
    keys: dict[str, ApiKey]
    default_rate: Rate
    development_token: str | None = None
    jwt: JwtVerifier | None = None

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> Authenticator:
        rate = Rate(settings.api_rate_per_s, settings.api_rate_burst)
        return cls(
            keys=dict(settings.api_keys),
            default_rate=rate,
            development_token=settings.development_token(),
            jwt=JwtVerifier.from_settings(settings, rate),
        )

    def authenticate(self, authorization: str | None) -> Caller:
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("missing credential: Authorization: Bearer <key>")
        if self.development_token is not None and hmac.compare_digest(
            token.encode(), self.development_token.encode()
        ):
            return Caller("development", "development", frozenset(SCOPES))
        if self.jwt is not None and token.count(".") == 2 and token.startswith("eyJ"):
            return self.jwt.verify(token)
        return self._named_key(token)

    def _named_key(self, token: str) -> Caller:
        key_id, _, secret = token.partition(".")
        key = self.keys.get(key_id)
        matches = hmac.compare_digest(digest(secret), key.sha256 if key else _NO_KEY)
        if key is None or not matches or len(secret) < MIN_SECRET_CHARS:
            raise Unauthenticated("invalid credential")
        rate = self.default_rate
        if key.rate_per_s is not None or key.burst is not None:
            rate = Rate(key.rate_per_s or rate.per_s, key.burst or rate.burst)
        return Caller(f"key:{key_id}", key.client, frozenset(key.scopes), rate=rate)
