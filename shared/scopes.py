"""The scopes a credential can carry, and what each one opens (the README lists them)."""

from __future__ import annotations

from typing import Literal, get_args

Scope = Literal[
    "tickets:read",
    "tickets:act",
    "tickets:act-as",
    "agents:read",
    "agents:admin",
    "customers:write",
    "erasure:write",
    "incidents:read",
    "incidents:write",
]
SCOPES: tuple[Scope, ...] = get_args(Scope)

TICKETS_READ: Scope = "tickets:read"
TICKETS_ACT: Scope = "tickets:act"
TICKETS_ACT_AS: Scope = "tickets:act-as"
AGENTS_READ: Scope = "agents:read"
AGENTS_ADMIN: Scope = "agents:admin"
CUSTOMERS_WRITE: Scope = "customers:write"
ERASURE_WRITE: Scope = "erasure:write"
INCIDENTS_READ: Scope = "incidents:read"
INCIDENTS_WRITE: Scope = "incidents:write"

MEANING: dict[Scope, str] = {
    "tickets:read": "read tickets with their decision records, and agent actions' outcomes",
    "tickets:act": "desk work as the credential's own agent: accept, decline, reply, wait,"
    " resolve, recategorize, presence",
    "tickets:act-as": "with tickets:act, act for any agent named in the request (a desk backend)",
    "agents:read": "read agents' profiles, presence and load",
    "agents:admin": "create and change agents' profiles (skills, languages, capacity)",
    "customers:write": "create and change customers (identities, tier, anti-phishing code)",
    "erasure:write": "request a customer's erasure and place legal holds",
    "incidents:read": "read incidents (the public banners and status page need nothing)",
    "incidents:write": "open, update and resolve incidents",
}
