"""`support.incidents`: platform incidents declared by ops, keyed by incident id.

Every event carries the whole incident as it is after the change (a snapshot with a
version), so a consumer never needs the earlier events to know the current state.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from shared.contracts.common import MAX_INT64, Category, Contract, UtcDatetime

INCIDENT_OPENED = "omniroute.incident.opened.v1"
INCIDENT_UPDATED = "omniroute.incident.updated.v1"
INCIDENT_RESOLVED = "omniroute.incident.resolved.v1"
INCIDENT_EVENT_TYPES = (INCIDENT_OPENED, INCIDENT_UPDATED, INCIDENT_RESOLVED)

IncidentStatus = Literal["investigating", "identified", "monitoring", "resolved"]
INCIDENT_STATUSES: tuple[IncidentStatus, ...] = (
    "investigating",
    "identified",
    "monitoring",
    "resolved",
)
Severity = Literal["minor", "major", "critical"]
SEVERITIES: tuple[Severity, ...] = ("minor", "major", "critical")


def language_key(tag: str) -> str:
    """The primary language subtag, lower case: "zh-Hans" → "zh", "en_US" → "en"."""
    return tag.replace("_", "-").split("-", 1)[0].strip().lower()


class Affected(Contract):
    """What an incident touches. An empty list means "not limited along this dimension"."""

    categories: tuple[Category, ...] = Field(default=(), description="Ticket categories")
    assets: tuple[str, ...] = Field(default=(), description="Tickers, upper case: BTC, USDT")
    networks: tuple[str, ...] = Field(default=(), description="Chains, lower case: btc, eth")
    regions: tuple[str, ...] = Field(default=(), description="Shown on banners; not matched")

    @field_validator("assets")
    @classmethod
    def _upper(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v.strip().upper() for v in value if v.strip()))

    @field_validator("networks", "regions")
    @classmethod
    def _lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v.strip().lower() for v in value if v.strip()))


class Incident(Contract):
    """An incident as it is after the change the event announces."""

    incident_id: str
    status: IncidentStatus
    severity: Severity
    title: dict[str, str] = Field(description="Language (ISO 639-1) -> title; 'en' always set")
    body: dict[str, str] = Field(default_factory=dict, description="Language -> text")
    affected: Affected = Affected()
    version: int = Field(ge=1, le=MAX_INT64, description="1 when opened, +1 per change")
    created_at: UtcDatetime
    updated_at: UtcDatetime
    resolved_at: UtcDatetime | None = None

    @property
    def open(self) -> bool:
        return self.status != "resolved"


def incident_event_type(incident: Incident) -> str:
    if incident.status == "resolved":
        return INCIDENT_RESOLVED
    return INCIDENT_OPENED if incident.version == 1 else INCIDENT_UPDATED
