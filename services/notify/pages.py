"""Banners (JSON for the exchange's website and apps) and the public status page (HTML).

Pure functions of (incidents, language, now). The page needs no JavaScript: a heading
per section, one article per incident, the language in `<html lang>`, and the anti-scam
line at the bottom, as on every customer-facing text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from html import escape

from services.notify.render import IncidentText, Templates, pick
from shared.contracts.incidents import SEVERITIES, Incident, language_key

SUPPORTED = ("en", "zh")
HTML_LANG = {"en": "en", "zh": "zh-Hans"}


def choose_language(explicit: str | None, accept_language: str | None) -> str:
    """`?lang=`/`?locale=` first, then the best Accept-Language entry we have, else en."""
    if explicit:
        key = language_key(explicit)
        return key if key in SUPPORTED else "en"
    ranked: list[tuple[float, int, str]] = []
    for n, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        key = language_key(tag) if tag else ""
        if key in SUPPORTED and q > 0:
            ranked.append((-q, n, key))
    return min(ranked)[2] if ranked else "en"


def _order(incidents: Sequence[Incident]) -> list[Incident]:
    # Worst first, then most recently changed.
    return sorted(
        incidents,
        key=lambda i: (-SEVERITIES.index(i.severity), -i.updated_at.timestamp(), i.incident_id),
    )


def banners(
    incidents: Sequence[Incident], language: str, templates: Templates
) -> dict[str, object]:
    """`GET /v1/banners`: the open incidents, worst first, in one language."""
    items = []
    for inc in _order([i for i in incidents if i.open]):
        title, body = IncidentText(inc.title, inc.body).localised(language)
        items.append(
            {
                "id": inc.incident_id,
                "severity": inc.severity,
                "status": inc.status,
                "status_label": templates.label(f"status_{inc.status}", language),
                "title": title,
                "body": body,
                "affected": inc.affected.model_dump(mode="json"),
                "updated_at": inc.updated_at.isoformat(),
            }
        )
    return {
        "locale": language,
        "banners": items,
        "anti_scam": " ".join(pick(templates.anti_scam, language)[1].split()),
    }


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def json_bytes(payload: dict[str, object]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


def _article(inc: Incident, language: str, templates: Templates) -> str:
    title, body = IncidentText(inc.title, inc.body).localised(language)
    label = templates.label
    a = inc.affected
    scope = [*a.categories, *a.assets, *(n.upper() for n in a.networks), *a.regions]
    parts = [
        f'<article class="incident {escape(inc.severity)}" id="{escape(inc.incident_id)}">',
        f"<h3>{escape(title)}</h3>",
        '<p class="meta">'
        f'<span class="status">{escape(label(f"status_{inc.status}", language))}</span> · '
        f'<span class="severity">{escape(label(f"severity_{inc.severity}", language))}</span> · '
        f'{escape(label("updated", language))} <time datetime="{inc.updated_at.isoformat()}">'
        f"{_when(inc.updated_at)}</time></p>",
    ]
    if body:
        parts.append(f"<p>{escape(body)}</p>")
    if scope:
        parts.append(
            f'<p class="affected">{escape(label("affected", language))}: '
            f"{escape(', '.join(scope))}</p>"
        )
    parts.append("</article>")
    return "\n".join(parts)


STYLE = """
body{font-family:system-ui,-apple-system,"Noto Sans CJK SC","WenQuanYi Zen Hei",sans-serif;
max-width:46rem;margin:2rem auto;padding:0 1rem;color:#1a1a1a;line-height:1.5}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ccc}
.incident{border-left:4px solid #888;padding:.25rem 1rem;margin:1rem 0;background:#f7f7f7}
.incident.major{border-color:#c77700}.incident.critical{border-color:#b00020}
.meta{color:#444;font-size:.9rem}.ok{color:#1b5e20;font-weight:600}
footer{margin-top:2.5rem;font-size:.9rem;color:#333}
"""


def status_html(
    current: Sequence[Incident],
    recent: Sequence[Incident],
    language: str,
    templates: Templates,
    now: datetime,
) -> str:
    """The whole status page."""
    label = templates.label
    title = label("title", language)
    open_now = _order([i for i in current if i.open])
    resolved = _order([i for i in recent if not i.open])
    sections = [
        '<section aria-labelledby="current">',
        f'<h2 id="current">{escape(label("current", language))}</h2>',
    ]
    if open_now:
        sections += [_article(i, language, templates) for i in open_now]
    else:
        sections.append(f'<p class="ok">{escape(label("all_clear", language))}</p>')
    sections.append("</section>")
    sections.append('<section aria-labelledby="recent">')
    sections.append(f'<h2 id="recent">{escape(label("recent", language))}</h2>')
    if resolved:
        sections += [_article(i, language, templates) for i in resolved]
    else:
        sections.append(f"<p>{escape(label('none_recent', language))}</p>")
    sections.append("</section>")
    anti_scam = " ".join(pick(templates.anti_scam, language)[1].split())
    return "\n".join(
        [
            "<!doctype html>",
            f'<html lang="{HTML_LANG.get(language, "en")}">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(title)}</title>",
            f"<style>{STYLE}</style>",
            "</head>",
            "<body>",
            "<main>",
            f"<h1>{escape(title)}</h1>",
            f'<p class="meta">{escape(label("updated", language))} '
            f'<time datetime="{now.isoformat()}">{_when(now)}</time></p>',
            *sections,
            "</main>",
            f"<footer><h2>{escape(label('anti_scam_title', language))}</h2>"
            f"<p>{escape(anti_scam)}</p></footer>",
            "</body>",
            "</html>",
        ]
    )
