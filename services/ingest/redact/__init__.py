"""Secrets out of customer text before anything stores or publishes it.

- `secrets`: the detectors — BIP-39 seed phrases in every word list (checksum-validated),
  private keys (hex, WIF, extended keys), passwords and one-time codes after their cues —
  and `redact`, which replaces each with a `[REDACTED:<kind>]` marker and reports kind and
  count only.
- `scrub`: the same for a dead letter's raw payload, whatever transport encoding hides a
  secret in it (JSON escapes, form encoding, MIME base64 / quoted-printable).
"""

from services.ingest.redact.scrub import scrub
from services.ingest.redact.secrets import (
    B58_CLASS,
    KINDS,
    MARKER_PATTERN,
    MARKERS,
    RedactionKind,
    b58check_payload,
    b58decode,
    checksum_ok,
    redact,
)

__all__ = [
    "B58_CLASS",
    "KINDS",
    "MARKERS",
    "MARKER_PATTERN",
    "RedactionKind",
    "b58check_payload",
    "b58decode",
    "checksum_ok",
    "redact",
    "scrub",
]
