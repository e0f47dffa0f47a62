"""Rendering customer messages: every template in every language ends with the anti-scam
line, shows the anti-phishing code, and falls back to English."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from services.notify.estimate import Estimate
from services.notify.render import (
    WAIT_KINDS,
    IncidentText,
    Templates,
    format_duration,
    load_templates,
    render,
)
from shared.settings import REPO_POLICY_DIR

TEMPLATES = load_templates(REPO_POLICY_DIR / "templates.yaml")
LANGUAGES = ("en", "zh")
TEN_MINUTES = Estimate("estimate", 3, 600, 1800)
INCIDENT = IncidentText(
    title={"en": "BTC withdrawals delayed", "zh": "BTC 提现延迟"},
    body={"en": "Network congestion.", "zh": "网络拥堵。"},
)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("name", sorted(TEMPLATES.templates))
def test_every_template_and_language_ends_with_the_anti_scam_line(name: str, language: str) -> None:
    out = render(
        TEMPLATES,
        name,
        language,
        ticket_ref="tkt_42",
        expected_s=300,
        wait=TEN_MINUTES,
        incident=INCIDENT,
        anti_phishing_code="OWL-7731",
    )
    assert out.language == language
    anti_scam = " ".join(TEMPLATES.anti_scam[language].split())
    assert out.text.endswith(anti_scam)
    assert "tkt_42" in out.text
    assert "OWL-7731" in out.text
    assert "{" not in out.text  # no placeholder left unfilled
    assert "tkt_42" in out.subject


def test_anti_phishing_code_only_when_the_customer_has_one() -> None:
    with_code = render(TEMPLATES, "resolved", "zh", ticket_ref="t", anti_phishing_code="OWL-7731")
    without = render(TEMPLATES, "resolved", "zh", ticket_ref="t")
    assert "您的防钓鱼码：OWL-7731" in with_code.text
    assert "防钓鱼码" not in without.text


@pytest.mark.parametrize("language", ["fr", "ja", "", "xx-YY"])
def test_unknown_languages_fall_back_to_english(language: str) -> None:
    out = render(TEMPLATES, "acknowledgement", language, ticket_ref="t", wait=TEN_MINUTES)
    assert out.language == "en"
    assert "You are number 3 in the queue; we expect an agent to reply within about 10" in out.text
    assert out.text.endswith(" ".join(TEMPLATES.anti_scam["en"].split()))


@pytest.mark.parametrize("tag", ["zh", "zh-Hans", "zh-CN", "zh_TW"])
def test_chinese_tags_get_the_chinese_text(tag: str) -> None:
    out = render(TEMPLATES, "acknowledgement", tag, ticket_ref="t", wait=TEN_MINUTES)
    assert out.language == "zh"
    assert "您目前排在第 3 位，预计客服将于约 10 分钟内回复您。" in out.text


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", WAIT_KINDS)
def test_every_wait_is_said_in_every_language(kind: str, language: str) -> None:
    wait = Estimate(kind, 7, 5400, 1800, 3600)  # type: ignore[arg-type]
    out = render(TEMPLATES, "acknowledgement", language, ticket_ref="t", wait=wait)
    assert "7" in out.text
    assert "{" not in out.text
    if kind in ("past_due", "desk_closed", "estimate", "target_only"):
        assert ("90 minutes" if language == "en" else "90 分钟") in out.text
    if kind == "past_due":  # the target missed, said plainly
        assert (
            "our target of a reply within about 30 minutes" if language == "en" else "晚于"
        ) in (out.text)
    if kind == "unknown":
        assert ("within" if language == "en" else "分钟") not in out.text


def test_a_missing_translation_falls_back_per_text(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO_POLICY_DIR / "templates.yaml").read_text("utf-8"))
    del data["templates"]["resolved"]["zh"]
    templates = Templates.model_validate(data)
    out = render(templates, "resolved", "zh", ticket_ref="t")
    # The body falls back to English; the anti-scam line stays in the customer's language.
    assert out.language == "en"
    assert "has been resolved" in out.text


def test_security_acknowledgements_say_what_to_do_now() -> None:
    exposed = render(
        TEMPLATES, "acknowledgement_secret_exposed", "en", ticket_ref="t", wait=TEN_MINUTES
    )
    stolen = render(
        TEMPLATES, "acknowledgement_stolen_funds", "zh", ticket_ref="t", wait=TEN_MINUTES
    )
    assert "move your funds to a new wallet now" in exposed.text
    assert "冻结账户" in stolen.text


@pytest.mark.parametrize("language", ["en", "zh"])
def test_possible_security_acknowledgements_give_the_advice_as_a_precaution(
    language: str,
) -> None:
    theft = render(
        TEMPLATES, "acknowledgement_possible_theft", language, ticket_ref="t", wait=TEN_MINUTES
    )
    secret = render(
        TEMPLATES, "acknowledgement_possible_secret", language, ticket_ref="t", wait=TEN_MINUTES
    )
    assert theft.language == secret.language == language  # translated, no English fallback
    if language == "en":
        assert "freeze your account yourself now" in theft.text
        assert "a login or a change to your settings that you did not make" in theft.text
        assert "move your funds to a new wallet now" in secret.text
    else:
        assert "冻结账户" in theft.text and "非本人操作" in theft.text
        assert "转移到新钱包" in secret.text


def test_incident_notice_in_an_acknowledgement() -> None:
    out = render(
        TEMPLATES, "acknowledgement", "zh", ticket_ref="t", wait=TEN_MINUTES, notices=[INCIDENT]
    )
    assert "已知问题 — BTC 提现延迟：网络拥堵。" in out.text


def test_durations_are_minutes_then_hours() -> None:
    assert format_duration(TEMPLATES, 30, "en") == "within about 1 minutes"
    assert format_duration(TEMPLATES, 900, "en") == "within about 15 minutes"
    assert format_duration(TEMPLATES, 7200, "en") == "within about 2 hours"
    assert format_duration(TEMPLATES, 14400, "zh") == "约 4 小时内"


def test_templates_with_unknown_placeholders_or_no_english_are_refused() -> None:
    data = yaml.safe_load((REPO_POLICY_DIR / "templates.yaml").read_text("utf-8"))
    data["templates"]["resolved"]["en"] = "Done {ticket_ref} {password}"
    with pytest.raises(ValidationError, match="password"):
        Templates.model_validate(data)
    data = yaml.safe_load((REPO_POLICY_DIR / "templates.yaml").read_text("utf-8"))
    del data["templates"]["resolved"]["en"]
    with pytest.raises(ValidationError, match="no 'en' text"):
        Templates.model_validate(data)
    data = yaml.safe_load((REPO_POLICY_DIR / "templates.yaml").read_text("utf-8"))
    data["templates"]["resolved"]["fr"] = "Résolu {ticket_ref}"
    with pytest.raises(ValidationError, match="no anti-scam line"):
        Templates.model_validate(data)
