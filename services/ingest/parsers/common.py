"""What the parsers share: loading and validating a provider's payload, and normalising
the values every channel carries (text, lines, emails, phones, locales, times, ids).

Loading and validation raise `ParseError`; a value that cannot be normalised (an email
without a domain, a phone number of letters) becomes `None`, not an error, because one
odd optional field should not cost the customer's message.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError

from services.ingest.model import ParseError

MAX_ID_CHARS = 128
MAX_LINE_CHARS = 200

# C0/C1 controls and lone surrogates (JSON "\ud800" decodes to one, and it cannot be
# encoded back to UTF-8 when the message is published); newline and tab survive.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_LINE_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_EMAIL = re.compile(r"[^@\s<>()\[\],;:\"\\]+@[^@\s<>()\[\],;:\"\\]+\.[^@\s<>()\[\],;:\"\\]+")
_PHONE_NOISE = re.compile(r"[\s\-.()/]")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}", re.ASCII)
_NATIONAL = re.compile(r"[0-9]{5,15}", re.ASCII)
_LOCALE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8}){0,3}", re.ASCII)
# 9999-12-31T23:59:59Z: the last second a `datetime` can hold.
_MAX_UNIX_S = 253_402_300_799
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Shape(BaseModel):
    """Base of the provider payload shapes: only the fields we read, the rest ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


ShapeT = TypeVar("ShapeT", bound=Shape)


def load_json(raw: bytes, provider: str) -> object:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ParseError(f"{provider}: not utf-8") from exc
    try:
        return json.loads(text)
    # ValueError also covers integers longer than sys.get_int_max_str_digits().
    except (ValueError, RecursionError) as exc:
        raise ParseError(f"{provider}: invalid json") from exc


def validate(shape: type[ShapeT], data: object, provider: str) -> ShapeT:
    if not isinstance(data, dict):
        raise ParseError(f"{provider}: not an object")
    try:
        return shape.model_validate(data)
    except (ValidationError, RecursionError) as exc:
        raise ParseError(f"{provider}: invalid payload") from exc


def clean_text(value: str, max_chars: int) -> str:
    text = value.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROLS.sub("", text).strip()[:max_chars]


def clean_line(value: str, max_chars: int = MAX_LINE_CHARS) -> str:
    return _LINE_CONTROLS.sub("", value).strip()[:max_chars]


def optional_line(value: str | None) -> str | None:
    return (clean_line(value) or None) if value is not None else None


def normalise_email(value: str | None) -> str | None:
    if value is None:
        return None
    email = clean_line(value, 320).lower()
    return email if len(email) <= 254 and _EMAIL.fullmatch(email) else None


def normalise_phone(value: str | None) -> str | None:
    """E.164 when the number carries its country code; bare national digits otherwise."""
    if value is None:
        return None
    number = _PHONE_NOISE.sub("", clean_line(value).removeprefix("tel:"))
    if number.startswith("00"):
        number = "+" + number[2:]
    if _E164.fullmatch(number) or _NATIONAL.fullmatch(number):
        return number
    return None


def normalise_locale(value: str | None) -> str | None:
    if value is None or not _LOCALE.fullmatch(value):
        return None
    return value.replace("_", "-")


def from_unix(seconds: float) -> datetime:
    """Raises ValueError (not OverflowError) when out of range, so pydantic reports it."""
    if not 0 <= seconds <= _MAX_UNIX_S:
        raise ValueError("unix time out of range")
    return _EPOCH + timedelta(seconds=seconds)


def _to_id(value: object) -> str:
    # bool is an int subclass; a provider id is never true/false.
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("an id is a string or an integer")
    text = str(value).strip()
    # Rejected rather than cleaned: two different raw ids must never become one dedup key.
    if not text or len(text) > MAX_ID_CHARS or _LINE_CONTROLS.search(text):
        raise ValueError("an id is 1 to 128 printable characters")
    return text


def _to_utc(value: datetime) -> datetime:
    # A naive time from a generic integration is taken as UTC rather than rejected.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("timestamp out of range") from exc


Id = Annotated[str, BeforeValidator(_to_id)]
"""A provider id: string or integer on the wire, a non-empty single-line string here."""

UtcTime = Annotated[datetime, AfterValidator(_to_utc)]
"""ISO 8601 or unix seconds on the wire; time-zone aware UTC here."""
