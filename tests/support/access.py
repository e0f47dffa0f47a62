"""Credentials for tests: named keys with chosen scopes, an OIDC-like issuer of desk JWTs,
and an `Access` whose audit log is in memory."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client import CollectorRegistry

from shared.access import Access, AccessMetrics
from shared.audit import MemoryAuditLog
from shared.auth import new_key
from shared.settings import ServiceSettings

ISSUER = "https://login.exchange.test/"
AUDIENCE = "omniroute"


@dataclass
class Keys:
    """Named keys: `add` gives the bearer header; `env` is OMNIROUTE_API_KEYS's value."""

    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def add(
        self, key_id: str, scopes: Iterable[str], *, client: str | None = None, **extra: Any
    ) -> dict[str, str]:
        token, entry = new_key(key_id, client or key_id, tuple(scopes))
        self.entries[key_id] = {**entry.model_dump(mode="json"), **extra}
        self.tokens[key_id] = token
        return self.auth(key_id)

    def auth(self, key_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[key_id]}"}

    def env(self) -> str:
        return json.dumps(self.entries)


@dataclass
class Issuer:
    """Signs desk tokens as an exchange's OIDC provider would (RS256, a `kid`)."""

    kid: str = "test-1"
    private: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )

    def public_pem(self) -> str:
        return (
            self.private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def jwks(self) -> str:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        return json.dumps({"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]})

    def settings(self) -> dict[str, Any]:
        return {"jwt_issuer": ISSUER, "jwt_audience": AUDIENCE, "jwt_public_key": self.jwks()}

    def env(self) -> dict[str, str]:
        return {
            "OMNIROUTE_JWT_ISSUER": ISSUER,
            "OMNIROUTE_JWT_AUDIENCE": AUDIENCE,
            "OMNIROUTE_JWT_PUBLIC_KEY": self.jwks(),
        }

    def token(self, subject: str, scopes: Iterable[str], **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": subject,
            "iat": now,
            "exp": now + 300,
            "scope": " ".join(scopes),
            **claims,
        }
        return jwt.encode(payload, self.private, algorithm="RS256", headers={"kid": self.kid})

    def auth(self, subject: str, scopes: Iterable[str], **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(subject, scopes, **claims)}"}


def memory_access(settings: ServiceSettings) -> tuple[Access, MemoryAuditLog]:
    audit = MemoryAuditLog()
    metrics = AccessMetrics.create(settings.service_name, CollectorRegistry())
    return Access.create(settings, audit, metrics), audit
