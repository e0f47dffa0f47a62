"""A dead letter's payload with its secrets removed, however the payload encodes them."""

from __future__ import annotations

import json
import re
from email import message_from_string
from email.header import decode_header, make_header
from email.policy import compat32
from urllib.parse import unquote_plus

from services.ingest.redact.secrets import redact

_JSON_ESCAPES = re.compile(r'(?:\\(?:u[0-9a-fA-F]{4}|["\\/bfnrt]))+')
_SURROGATES = re.compile("[\ud800-\udfff]")


def scrub(text: str) -> str:
    """A dead letter's payload with its secrets removed, however the payload encodes them.

    `redact` reads text as written, but a raw payload can hide a secret in its transport
    encoding: JSON "\\u52a9" escapes and "\\n" between words, form encoding
    ("seed+abandon+ability"), MIME base64 or quoted-printable bodies and encoded-word
    headers. When a decoded view of the payload shows a secret, that view, redacted, is
    kept instead: less faithful to the bytes, but nothing of the secret is left.
    """
    scrubbed = redact(text)[0]
    for decode in (_json_unescaped, _form_decoded, _mime_decoded):
        # Decode the original, not the scrubbed text: a partial redaction of the raw
        # encoding (a quoted-printable line of whole words) would break the phrase apart
        # and hide the rest of it from the decoded view.
        # Lone surrogates (a "\\ud800" escape, an odd MIME charset) cannot be published.
        view = _SURROGATES.sub("\ufffd", decode(text))
        if view != text:
            redacted, found = redact(view)
            if found:
                return redacted
    return scrubbed


def _json_unescaped(text: str) -> str:
    if "\\" not in text:
        return text
    # Each run of escapes is a valid JSON string body.
    return _JSON_ESCAPES.sub(lambda m: json.loads(f'"{m.group()}"'), text)


def _form_decoded(text: str) -> str:
    return unquote_plus(text, errors="replace") if "%" in text or "+" in text else text


def _mime_decoded(text: str) -> str:
    if "content-transfer-encoding" not in text.lower() and "=?" not in text:
        return text
    try:
        message = message_from_string(text, policy=compat32)
        lines = [f"{name}: {make_header(decode_header(value))}" for name, value in message.items()]
        for part in message.walk():
            body = None if part.is_multipart() else part.get_payload(decode=True)
            if isinstance(body, bytes):
                lines.append(_text_of(body, part.get_content_charset()))
    except Exception:  # a payload we dead-letter is often not valid MIME either
        return text
    return "\n".join(lines)


def _text_of(body: bytes, charset: str | None) -> str:
    for codec in (charset or "utf-8", "utf-8", "gb18030"):
        try:
            return body.decode(codec)
        except (LookupError, UnicodeDecodeError):
            continue
    return body.decode("utf-8", "replace")
