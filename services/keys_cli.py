"""`omniroute keys new`: a named API key for OMNIROUTE_API_KEYS (docs/deploy.md)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from shared.auth import new_key
from shared.scopes import MEANING, SCOPES


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="omniroute keys",
        description="Make a named API key: the bearer credential for the client (shown once)"
        " and the entry for OMNIROUTE_API_KEYS (only the secret's SHA-256).",
        epilog="scopes: " + "; ".join(f"{s}: {MEANING[s]}" for s in SCOPES),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    new = sub.add_parser("new", help="a new key")
    new.add_argument("key_id", help="e.g. desk-2026-11 (lower case, digits, - and _)")
    new.add_argument("--client", required=True, help="who holds it, e.g. desk (two keys each)")
    new.add_argument(
        "--scopes", required=True, help="comma-separated, e.g. tickets:read,tickets:act"
    )
    new.add_argument("--rate-per-s", type=float, default=None, help="requests per second")
    new.add_argument("--burst", type=int, default=None, help="requests at once")
    args = parser.parse_args(list(argv))
    scopes = tuple(s.strip() for s in args.scopes.split(",") if s.strip())
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        print(f"unknown scopes: {', '.join(unknown)} (known: {', '.join(SCOPES)})", file=sys.stderr)
        return 2
    try:
        token, entry = new_key(args.key_id, args.client, scopes)
    except (ValueError, ValidationError) as exc:
        print(f"invalid key: {exc}", file=sys.stderr)
        return 2
    fields = entry.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    fields.update(
        {k: v for k, v in (("rate_per_s", args.rate_per_s), ("burst", args.burst)) if v is not None}
    )
    print("Give the client this credential (it is not stored anywhere; shown once):")
    print(f"  Authorization: Bearer {token}")
    print("Add this entry to OMNIROUTE_API_KEYS (a JSON object of key id -> entry):")
    print(f"  {json.dumps({args.key_id: fields})}")
    return 0
