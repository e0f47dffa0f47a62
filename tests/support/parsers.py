"""What the parser tests share: reading one result, and the contract every parser keeps
whatever bytes it is given."""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from datetime import UTC

from services.ingest.model import ParsedMessage, ParseError, ParserConfig, ParseResult, Skipped
from services.ingest.parsers.sniff import Parser

# "provider: what" -- short, and no content: reasons become Prometheus label values.
REASON = re.compile(r"[a-z]+: [a-zA-Z0-9_<> -]{3,50}")
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def dumps(payload: object) -> bytes:
    # ASCII escapes let lone surrogates ("\ud800") reach the parser, as they can on the wire.
    return json.dumps(payload).encode()


def only_message(result: ParseResult) -> ParsedMessage:
    assert len(result) == 1
    assert isinstance(result[0], ParsedMessage), result
    return result[0]


def only_skip(result: ParseResult) -> str:
    assert len(result) == 1
    assert isinstance(result[0], Skipped), result
    return result[0].reason


def check_contract(
    parser: Parser, raw: bytes, config: ParserConfig, reasons: Collection[str] | None = None
) -> ParseResult:
    """Either a well-formed result or a ParseError with a short, content-free reason (one
    of `reasons` when given). Returns the result, empty after a ParseError."""
    error: str | None = None
    try:
        result = parser(raw, config)
    except ParseError as raised:
        error, result = raised.reason, []
    assert error is not None or result
    given = [error] if error is not None else []
    given += [item.reason for item in result if isinstance(item, Skipped)]
    if reasons is None:
        assert all(REASON.fullmatch(reason) for reason in given), given
    else:
        assert all(reason in reasons for reason in given), given
    for item in result:
        if isinstance(item, Skipped):
            continue
        assert isinstance(item, ParsedMessage)
        assert len(item.text) <= config.max_text_chars
        assert not CONTROL.search(item.text)
        # Everything must survive publishing as UTF-8 JSON (no lone surrogates).
        json.dumps(item.model_dump(mode="json"), ensure_ascii=False).encode("utf-8")
        assert item.sent_at is None or item.sent_at.tzinfo is UTC
        assert all(identity.value == identity.value.strip() for identity in item.identities)
        assert item.kind == "message" or item.callback_number
    return result
