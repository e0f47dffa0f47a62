"""Credentials: named keys, desk JWTs, the development key; token buckets."""

from __future__ import annotations

import json
import time

import jwt
import pytest

from shared.auth import Authenticator, Caller, Unauthenticated, digest
from shared.ratelimit import Rate, RateLimiter
from shared.scopes import SCOPES
from shared.settings import RouterSettings
from tests.support.access import AUDIENCE, ISSUER, Issuer, Keys

ISSUED = Issuer()


def authenticator(keys: Keys | None = None, **settings: object) -> Authenticator:
    entries = keys.entries if keys else {}
    return Authenticator.from_settings(
        RouterSettings.model_validate({"api_keys": entries, **ISSUED.settings(), **settings})
    )


def bearer(token: str) -> str:
    return f"Bearer {token}"


def test_a_named_key_is_its_scopes_and_nothing_else() -> None:
    keys = Keys()
    keys.add("desk-2026a", ["tickets:read", "tickets:act"], client="desk")
    auth = authenticator(keys)
    caller = auth.authenticate(bearer(keys.tokens["desk-2026a"]))
    assert caller == Caller(
        "key:desk-2026a",
        "desk",
        frozenset({"tickets:read", "tickets:act"}),
        rate=Rate(20.0, 40),
    )
    assert caller.refuses_to_act_as("alice") is not None  # no agent, no act-as

    key_id, secret = keys.tokens["desk-2026a"].split(".", 1)
    for wrong in (
        f"{key_id}.{secret[:-1]}x",  # one character off
        f"desk-2026b.{secret}",  # another key's id
        key_id,  # no secret
        secret,
        "",
    ):
        with pytest.raises(Unauthenticated):
            auth.authenticate(bearer(wrong))
    with pytest.raises(Unauthenticated, match="missing"):
        auth.authenticate(None)
    with pytest.raises(Unauthenticated):
        auth.authenticate(f"Basic {keys.tokens['desk-2026a']}")


def test_short_secrets_are_refused_even_when_configured() -> None:
    short = "tooshort"
    keys = Keys()
    keys.entries["weak-key"] = {
        "client": "weak",
        "sha256": digest(short),
        "scopes": ["tickets:read"],
    }
    with pytest.raises(Unauthenticated):
        authenticator(keys).authenticate(bearer(f"weak-key.{short}"))


def test_the_development_key_is_everything_in_development_and_nothing_in_production() -> None:
    dev = authenticator()
    caller = dev.authenticate(bearer("dev-token"))
    assert caller.scopes == frozenset(SCOPES)
    assert caller.rate is None
    assert caller.refuses_to_act_as("anyone") is None
    custom = authenticator(api_token="a-development-token-of-my-own")
    assert custom.authenticate(bearer("a-development-token-of-my-own")).principal == "development"
    with pytest.raises(Unauthenticated):
        custom.authenticate(bearer("dev-token"))
    production = Authenticator.from_settings(
        RouterSettings(environment="production", webhook_secrets={})
    )
    with pytest.raises(Unauthenticated):
        production.authenticate(bearer("dev-token"))


def test_a_desk_jwt_is_its_subject_with_its_scopes() -> None:
    auth = authenticator()
    alice = auth.authenticate(bearer(ISSUED.token("alice", ["tickets:act", "not:a-scope"])))
    assert (alice.principal, alice.agent_id) == ("jwt:alice", "alice")
    assert alice.scopes == frozenset({"tickets:act"})
    assert alice.refuses_to_act_as("alice") is None
    assert "cannot act as mallory" in (alice.refuses_to_act_as("mallory") or "")
    # `scp` as a list (Azure AD, Okta) works as well as `scope`.
    listed = ISSUED.token("bob", [], scope=None, scp=["tickets:read", "agents:read"])
    assert auth.authenticate(bearer(listed)).scopes == {"tickets:read", "agents:read"}
    # An agent claim other than `sub`, when the provider's subject is not the agent id.
    by_claim = authenticator(jwt_agent_claim="agent_id")
    token = ISSUED.token("0f9e-uuid", ["tickets:act"], agent_id="carol")
    assert by_claim.authenticate(bearer(token)).agent_id == "carol"


def test_jwts_from_elsewhere_or_expired_are_refused() -> None:
    auth = authenticator()
    now = int(time.time())
    bad = [
        ISSUED.token("alice", ["tickets:act"], exp=now - 3600),  # expired
        ISSUED.token("alice", ["tickets:act"], aud="someone-else"),
        ISSUED.token("alice", ["tickets:act"], iss="https://evil.test/"),
        ISSUED.token("alice/../x", ["tickets:act"]),  # not an agent id
        Issuer().token("alice", ["tickets:act"]),  # same kid, another key
        Issuer(kid="other").token("alice", ["tickets:act"]),  # unknown key
        jwt.encode(  # a shared-secret token: the algorithm is not allowed
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": now + 60},
            "a-secret-of-thirty-two-bytes-or-more!",
            algorithm="HS256",
        ),
    ]
    for token in bad:
        with pytest.raises(Unauthenticated):
            auth.authenticate(bearer(token))
    # A PEM key instead of a JWKS document: one key, no `kid` needed.
    pem = authenticator(jwt_public_key=ISSUED.public_pem())
    assert pem.authenticate(bearer(ISSUED.token("alice", ["tickets:read"]))).agent_id == "alice"


def test_a_token_bucket_admits_its_burst_then_its_rate() -> None:
    limiter, rate = RateLimiter(), Rate(per_s=2.0, burst=3)
    assert [limiter.take("k", rate, 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("k", rate, 100.0) == pytest.approx(0.5)  # next token in half a second
    assert limiter.take("other", rate, 100.0) == 0.0  # keys do not share a bucket
    assert limiter.take("k", rate, 100.6) == 0.0
    assert limiter.take("k", rate, 100.6) > 0
    # Forgotten buckets (beyond max_keys, least recent first) come back full.
    small = RateLimiter(max_keys=2)
    for key in ("a", "b", "c"):
        small.take(key, Rate(1.0, 1), 0.0)
    assert list(small.buckets) == ["b", "c"]


def test_omniroute_keys_new_prints_a_working_key_and_its_entry(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from services.keys_cli import main

    assert main(["new", "desk-2026-11", "--client", "desk", "--scopes", "tickets:read"]) == 0
    out = capsys.readouterr().out
    token = out.split("Bearer ", 1)[1].split()[0]
    entry = json.loads(out.strip().splitlines()[-1])
    auth = Authenticator.from_settings(RouterSettings.model_validate({"api_keys": entry}))
    assert auth.authenticate(bearer(token)).principal == "key:desk-2026-11"
    assert token.split(".", 1)[1] not in json.dumps(entry)  # only the digest is configured
    assert main(["new", "Desk", "--client", "desk", "--scopes", "tickets:read"]) == 2
    assert main(["new", "desk-x", "--client", "desk", "--scopes", "tickets:all"]) == 2
