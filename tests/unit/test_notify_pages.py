"""Incidents API bodies, banners and the status page as pure functions."""

from __future__ import annotations

from datetime import timedelta
from html.parser import HTMLParser

import pytest
from pydantic import ValidationError

from services.notify.incidents import IncidentIn, IncidentPatch, new_incident, patched
from services.notify.pages import banners, choose_language, etag_of, json_bytes, status_html
from services.notify.render import load_templates
from shared.contracts.incidents import INCIDENT_RESOLVED, INCIDENT_UPDATED, incident_event_type
from shared.settings import REPO_POLICY_DIR
from tests.support.factories import T0

TEMPLATES = load_templates(REPO_POLICY_DIR / "templates.yaml")


def opened(severity: str = "major", **over: object) -> object:
    data = IncidentIn.model_validate(
        {
            "severity": severity,
            "title": {"en": "BTC withdrawals delayed", "zh-Hans": "BTC 提现延迟"},
            "body": {"en": "Network congestion.", "zh_CN": "网络拥堵。"},
            "affected": {"categories": ["withdrawal"], "assets": ["btc"], "networks": ["BTC"]},
            **over,
        }
    )
    return new_incident("inc_1", data, T0)


def test_incident_bodies_normalise_languages_and_need_english() -> None:
    inc = opened()
    assert inc.title == {"en": "BTC withdrawals delayed", "zh": "BTC 提现延迟"}
    assert inc.affected.assets == ("BTC",)
    assert inc.affected.networks == ("btc",)
    with pytest.raises(ValidationError, match="'en'"):
        IncidentIn.model_validate({"title": {"zh": "只有中文"}})
    with pytest.raises(ValidationError):
        IncidentIn.model_validate({"title": {"en": "x"}, "status": "exploded"})
    with pytest.raises(ValidationError):
        IncidentPatch.model_validate({"colour": "red"})


def test_patch_merges_texts_bumps_the_version_and_stamps_resolution() -> None:
    inc = opened()
    later = T0 + timedelta(minutes=5)
    nxt = patched(inc, IncidentPatch(status="identified", body={"en": "Fee market spike."}), later)
    assert (nxt.version, nxt.status, nxt.updated_at) == (2, "identified", later)
    assert nxt.body == {"en": "Fee market spike.", "zh": "网络拥堵。"}
    assert incident_event_type(nxt) == INCIDENT_UPDATED
    done = patched(nxt, IncidentPatch(status="resolved"), later + timedelta(minutes=1))
    assert done.resolved_at == later + timedelta(minutes=1)
    assert incident_event_type(done) == INCIDENT_RESOLVED
    reopened = patched(done, IncidentPatch(status="monitoring"), later + timedelta(minutes=2))
    assert reopened.resolved_at is None


@pytest.mark.parametrize(
    ("explicit", "accept", "expected"),
    [
        ("zh", None, "zh"),
        ("zh-Hans", "en", "zh"),
        ("fr", "zh", "en"),
        (None, "zh-CN,zh;q=0.9,en;q=0.8", "zh"),
        (None, "fr-FR, en;q=0.5, zh;q=0.4", "en"),
        (None, "en;q=0.3, zh-TW;q=0.8", "zh"),
        (None, "", "en"),
        (None, "de;q=abc", "en"),
    ],
)
def test_language_choice(explicit: str | None, accept: str | None, expected: str) -> None:
    assert choose_language(explicit, accept) == expected


def test_banners_list_open_incidents_worst_first_in_one_language() -> None:
    minor = opened("minor").model_copy(update={"incident_id": "inc_minor"})
    critical = opened("critical").model_copy(update={"incident_id": "inc_crit"})
    gone = opened().model_copy(update={"incident_id": "inc_gone", "status": "resolved"})
    payload = banners([minor, gone, critical], "zh", TEMPLATES)
    assert [b["id"] for b in payload["banners"]] == ["inc_crit", "inc_minor"]  # type: ignore[index]
    first = payload["banners"][0]  # type: ignore[index]
    assert (first["title"], first["body"], first["status_label"]) == (
        "BTC 提现延迟",
        "网络拥堵。",
        "调查中",
    )
    assert "助记词" in str(payload["anti_scam"])
    # The ETag changes with the content and only with it.
    assert etag_of(json_bytes(payload)) == etag_of(
        json_bytes(banners([critical, minor], "zh", TEMPLATES))
    )
    assert etag_of(json_bytes(payload)) != etag_of(json_bytes(banners([minor], "zh", TEMPLATES)))


class Outline(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.lang: str | None = None
        self.headings: list[str] = []
        self.scripts = 0
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "html":
            self.lang = dict(attrs).get("lang")
        if tag == "script":
            self.scripts += 1
        if tag in ("h1", "h2", "h3"):
            self._in = tag

    def handle_data(self, data: str) -> None:
        if self._in:
            self.headings.append(f"{self._in}:{data.strip()}")
            self._in = None


@pytest.mark.parametrize(
    ("lang", "html_lang", "expected"),
    [
        ("en", "en", ["h1:Service status", "h2:Current incidents", "h3:BTC withdrawals delayed"]),
        ("zh", "zh-Hans", ["h1:服务状态", "h2:当前事件", "h3:BTC 提现延迟"]),
    ],
)
def test_status_page_is_plain_accessible_html(
    lang: str, html_lang: str, expected: list[str]
) -> None:
    current = opened()
    old = opened("minor").model_copy(
        update={"incident_id": "inc_old", "status": "resolved", "title": {"en": "Login slow"}}
    )
    html = status_html([current, old], [current, old], lang, TEMPLATES, T0)
    outline = Outline()
    outline.feed(html)
    assert outline.lang == html_lang
    assert outline.scripts == 0
    assert outline.headings[:3] == expected
    assert "h3:Login slow" in outline.headings  # recently resolved, English fallback


def test_status_page_escapes_what_ops_typed() -> None:
    inc = opened(title={"en": "<script>alert(1)</script>"})
    html = status_html([inc], [inc], "en", TEMPLATES, T0)
    assert "<script>alert" not in html
    assert "&lt;script&gt;" in html
    quiet = status_html([], [], "en", TEMPLATES, T0)
    assert "All systems operational." in quiet
