"""Rendering customer notifications from templates as data. Pure functions."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, model_validator

from shared.contracts.tickets import TicketEvent

DEFAULT_LANGUAGE = "en"


class Templates(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    anti_scam: dict[str, str]
    templates: dict[str, dict[str, str]]

    @model_validator(mode="after")
    def _every_template_has_default_language(self) -> Templates:
        missing = [n for n, t in self.templates.items() if DEFAULT_LANGUAGE not in t]
        if DEFAULT_LANGUAGE not in self.anti_scam or missing:
            raise ValueError(f"templates without an '{DEFAULT_LANGUAGE}' text: {missing}")
        return self


def load_templates(path: Path) -> Templates:
    return Templates.model_validate(yaml.safe_load(path.read_text("utf-8")))


def acknowledgement_template(ev: TicketEvent) -> str:
    if ev.category == "secret_exposed":
        return "acknowledgement_secret_exposed"
    if ev.category in ("stolen_funds", "account_takeover"):
        return "acknowledgement_stolen_funds"
    return "acknowledgement"


def render(
    templates: Templates,
    name: str,
    language: str,
    *,
    ticket_ref: str,
    anti_phishing_code: str | None = None,
) -> tuple[str, str]:
    """(language used, text) — falls back to English when a translation is missing."""
    variants = templates.templates[name]
    lang = language if language in variants else DEFAULT_LANGUAGE
    body = variants[lang].format(ticket_ref=ticket_ref)
    anti_scam = templates.anti_scam.get(lang, templates.anti_scam[DEFAULT_LANGUAGE])
    parts = [body]
    if anti_phishing_code:
        label = "防钓鱼码" if lang == "zh" else "Your anti-phishing code"
        parts.append(f"{label}: {anti_phishing_code}")
    parts.append(anti_scam)
    return lang, "\n\n".join(parts)
