"""Incidents from the ops API: the request bodies and how a change applies. Pure.

Matching incidents to tickets is in decide.py (`matches`); the pages in pages.py.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.contracts.incidents import (
    Affected,
    Incident,
    IncidentStatus,
    Severity,
    language_key,
)

MAX_TITLE = 200
MAX_BODY = 5_000


def _texts(value: dict[str, str] | None, limit: int) -> dict[str, str] | None:
    if value is None:
        return None
    out: dict[str, str] = {}
    for tag, text in value.items():
        key = language_key(tag)
        if not key.isalpha() or len(key) > 3:
            raise ValueError(f"not a language tag: {tag!r}")
        text = text.strip()
        if len(text) > limit:
            raise ValueError(f"text for {key} longer than {limit} characters")
        if text:
            out[key] = text
    return out


class IncidentIn(BaseModel):
    """`POST /v1/incidents`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    status: IncidentStatus = "investigating"
    severity: Severity = "minor"
    title: dict[str, str] = Field(description="Language -> title; 'en' required")
    body: dict[str, str] = Field(default_factory=dict)
    affected: Affected = Affected()

    @field_validator("title")
    @classmethod
    def _title(cls, value: dict[str, str]) -> dict[str, str]:
        texts = _texts(value, MAX_TITLE) or {}
        if "en" not in texts:
            raise ValueError("title needs an 'en' text (the fallback language)")
        return texts

    @field_validator("body")
    @classmethod
    def _body(cls, value: dict[str, str]) -> dict[str, str]:
        return _texts(value, MAX_BODY) or {}


class IncidentPatch(BaseModel):
    """`PATCH /v1/incidents/{id}`: any field; title and body merge per language."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    status: IncidentStatus | None = None
    severity: Severity | None = None
    title: dict[str, str] | None = None
    body: dict[str, str] | None = None
    affected: Affected | None = None

    @field_validator("title")
    @classmethod
    def _title(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return _texts(value, MAX_TITLE)

    @field_validator("body")
    @classmethod
    def _body(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return _texts(value, MAX_BODY)


def new_incident(incident_id: str, data: IncidentIn, now: datetime) -> Incident:
    return Incident(
        incident_id=incident_id,
        status=data.status,
        severity=data.severity,
        title=dict(data.title),
        body=dict(data.body),
        affected=data.affected,
        version=1,
        created_at=now,
        updated_at=now,
        resolved_at=now if data.status == "resolved" else None,
    )


def patched(current: Incident, patch: IncidentPatch, now: datetime) -> Incident:
    """The next version. Resolving stamps `resolved_at`; re-opening clears it."""
    status = patch.status or current.status
    resolved_at = (current.resolved_at or now) if status == "resolved" else None
    return current.model_copy(
        update={
            "status": status,
            "severity": patch.severity or current.severity,
            "title": {**current.title, **(patch.title or {})},
            "body": {**current.body, **(patch.body or {})},
            "affected": patch.affected if patch.affected is not None else current.affected,
            "version": current.version + 1,
            "updated_at": now,
            "resolved_at": resolved_at,
        }
    )


def incident_json(incident: Incident) -> dict[str, object]:
    return incident.model_dump(mode="json")
