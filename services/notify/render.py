"""Customer messages from templates as data (policy/templates.yaml). Pure functions.

A message is: the template's text, any incident notices, the customer's anti-phishing
code when they set one, and always, last, the anti-scam line — in the customer's
language, or English when a text has no translation.
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, model_validator

from services.notify.estimate import Estimate
from shared.contracts.incidents import language_key

DEFAULT_LANGUAGE = "en"
TEMPLATE_FIELDS = frozenset({"ticket_ref", "expected", "wait", "incident_title", "incident_body"})
WAIT_FIELDS = frozenset({"position", "expected", "target", "opens"})
WAIT_KINDS = ("estimate", "past_due", "desk_closed", "target_only", "unknown")
LABEL_FIELDS: Mapping[str, frozenset[str]] = {
    "anti_phishing_code": frozenset({"code"}),
    "subject": frozenset({"ticket_ref"}),
    "incident_notice": frozenset({"incident_title", "incident_body"}),
}
DURATION_UNITS = ("minutes", "hours")

Texts = dict[str, str]  # language -> text


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


class Templates(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    anti_scam: Texts
    labels: dict[str, Texts]
    durations: dict[str, Texts]
    templates: dict[str, Texts]
    waits: dict[str, Texts] = {}
    status_page: dict[str, Texts] = {}

    @model_validator(mode="after")
    def _complete_and_known_placeholders(self) -> Templates:
        groups: list[tuple[str, Texts, frozenset[str]]] = [
            ("anti_scam", self.anti_scam, frozenset())
        ]
        groups += [(f"templates.{n}", t, TEMPLATE_FIELDS) for n, t in self.templates.items()]
        groups += [
            (f"durations.{u}", self.durations.get(u, {}), frozenset({"n"})) for u in DURATION_UNITS
        ]
        groups += [(f"labels.{n}", self.labels.get(n, {}), f) for n, f in LABEL_FIELDS.items()]
        groups += [(f"waits.{k}", self.waits.get(k, {}), WAIT_FIELDS) for k in WAIT_KINDS]
        groups += [(f"status_page.{n}", t, frozenset()) for n, t in self.status_page.items()]
        problems = []
        for where, texts, allowed in groups:
            if DEFAULT_LANGUAGE not in texts:
                problems.append(f"{where}: no '{DEFAULT_LANGUAGE}' text")
            for lang, text in texts.items():
                if unknown := _fields(text) - allowed:
                    problems.append(f"{where}.{lang}: unknown placeholders {sorted(unknown)}")
                if lang not in self.anti_scam:
                    problems.append(f"{where}.{lang}: no anti-scam line in that language")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def label(self, name: str, language: str) -> str:
        """A status page / banner label in the language (English fallback, else the name)."""
        texts = self.status_page.get(name)
        return pick(texts, language)[1] if texts else name


def load_templates(path: Path) -> Templates:
    return Templates.model_validate(yaml.safe_load(path.read_text("utf-8")))


def acknowledgement_template(category: str, possible_urgent: str | None = None) -> str:
    """The acknowledgement's text: the urgent categories' own, with their advice; for a
    ticket raised to P1 because its message possibly concerns one of them (a possible theft
    in a withdrawal question) the same advice, worded as a precaution."""
    if category == "secret_exposed":
        return "acknowledgement_secret_exposed"
    if category in ("stolen_funds", "account_takeover"):
        return "acknowledgement_stolen_funds"
    if possible_urgent == "secret_exposed":
        return "acknowledgement_possible_secret"
    if possible_urgent in ("stolen_funds", "account_takeover"):
        return "acknowledgement_possible_theft"
    return "acknowledgement"


def pick(texts: Mapping[str, str], language: str) -> tuple[str, str]:
    """(language used, text): the customer's language, else English, else any."""
    lang = language_key(language)
    if lang in texts:
        return lang, texts[lang]
    if DEFAULT_LANGUAGE in texts:
        return DEFAULT_LANGUAGE, texts[DEFAULT_LANGUAGE]
    return next(iter(texts.items()), (DEFAULT_LANGUAGE, ""))


def format_duration(templates: Templates, seconds: float, language: str) -> str:
    """ "within about 5 minutes" / "约 5 分钟内": minutes up to two hours, then hours."""
    minutes = max(1, math.ceil(seconds / 60))
    if minutes < 120:
        return pick(templates.durations["minutes"], language)[1].format(n=minutes)
    return pick(templates.durations["hours"], language)[1].format(n=math.ceil(minutes / 60))


@dataclass(frozen=True)
class IncidentText:
    """An incident's title and body, in every language ops wrote them in."""

    title: Mapping[str, str]
    body: Mapping[str, str]

    def localised(self, language: str) -> tuple[str, str]:
        # Title and body in the same language when possible.
        lang, title = pick(self.title, language)
        body = self.body.get(lang) or (pick(self.body, language)[1] if self.body else "")
        return title.strip(), body.strip()


def wait_text(templates: Templates, wait: Estimate, language: str) -> str:
    """The customer's place in the queue and when to expect a reply, in one sentence."""

    def duration(seconds: float | None) -> str:
        return format_duration(templates, seconds, language) if seconds else ""

    text = pick(templates.waits[wait.kind], language)[1]
    return text.format(
        position=wait.position,
        expected=duration(wait.expected_s),
        target=duration(wait.target_s),
        opens=duration(wait.opens_in_s),
    )


@dataclass(frozen=True)
class Rendered:
    language: str
    subject: str
    text: str


def render(
    templates: Templates,
    name: str,
    language: str,
    *,
    ticket_ref: str,
    expected_s: float | None = None,
    wait: Estimate | None = None,
    incident: IncidentText | None = None,
    notices: Sequence[IncidentText] = (),
    anti_phishing_code: str | None = None,
) -> Rendered:
    """The message `name` for one customer; falls back to English per text."""
    lang, body = pick(templates.templates[name], language)
    title, incident_body = incident.localised(lang) if incident else ("", "")
    values = {
        "ticket_ref": ticket_ref,
        "expected": format_duration(templates, expected_s, lang) if expected_s else "",
        "wait": wait_text(templates, wait, lang) if wait else "",
        "incident_title": title,
        "incident_body": incident_body,
    }
    parts = [" ".join(body.format(**values).split())]
    for notice in notices:
        n_title, n_body = notice.localised(lang)
        label = pick(templates.labels["incident_notice"], lang)[1]
        parts.append(label.format(incident_title=n_title, incident_body=n_body).strip())
    if anti_phishing_code:
        label = pick(templates.labels["anti_phishing_code"], lang)[1]
        parts.append(label.format(code=anti_phishing_code))
    parts.append(" ".join(pick(templates.anti_scam, lang)[1].split()))
    subject = pick(templates.labels["subject"], lang)[1].format(ticket_ref=ticket_ref)
    return Rendered(language=lang, subject=subject, text="\n\n".join(parts))
