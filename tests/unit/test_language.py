"""Language detection: lingua restricted to the supported languages, locale hints for short text."""

from __future__ import annotations

import pytest

from services.ingest.language import detect_language, language_of_locale


@pytest.mark.parametrize(
    "text",
    [
        "My withdrawal has been pending for two days, please help",
        "Someone changed my email address and withdrew everything",
        "Hello, I would like to know why my deposit is not credited yet",
    ],
)
def test_english(text: str) -> None:
    assert detect_language(text, None) == "en"
    # a long enough text outweighs a wrong locale hint
    assert detect_language(text, "zh-CN") == "en"


@pytest.mark.parametrize(
    "text",
    [
        "我的提现一直没有到账",
        "资产被盗",
        "充值 USDT 100 未到账 txid 0x9f2c4d3e1b0a998877",
        "UID 12345678 提现",
        "用户ID 12345678 充值2个ETH到0x742d35Cc6634C0532925a3b844Bc454e4438f44e",
    ],
)
def test_mostly_han_is_chinese(text: str) -> None:
    assert detect_language(text, None) == "zh"
    assert detect_language(text, "en-US") == "zh"


@pytest.mark.parametrize(
    ("text", "hint", "expected"),
    [
        ("ok", "zh-CN", "zh"),
        ("hi", "zh_TW.UTF-8", "zh"),
        ("help!!", "en_US", "en"),
        ("ok", None, "en"),
        ("USDT?", "zh-Hans-CN", "zh"),
    ],
)
def test_short_text_follows_the_hint(text: str, hint: str | None, expected: str) -> None:
    assert detect_language(text, hint) == expected


@pytest.mark.parametrize(
    ("text", "hint", "expected"),
    [
        ("", "zh-CN", "zh"),
        ("", None, "en"),
        ("   \n", "en-GB", "en"),
        ("12345 678", "zh", "zh"),
        ("🙏🙏🙏", None, "en"),
        ("", "fr-FR", "en"),  # a hint outside the supported languages is ignored
    ],
)
def test_no_letters_means_hint_or_english(text: str, hint: str | None, expected: str) -> None:
    assert detect_language(text, hint) == expected


def test_redaction_markers_are_not_english() -> None:
    assert detect_language("助记词[REDACTED:seed_phrase]", None) == "zh"
    assert detect_language("密码：[REDACTED:password] 谢谢", "en-US") == "zh"


def test_only_supported_languages_are_returned() -> None:
    french = "Bonjour, je ne peux pas retirer mes fonds depuis hier soir"

    assert detect_language(french, None) == "en"
    assert detect_language(french, None, ("en", "zh", "fr")) == "fr"
    assert detect_language(french, None, ("zh",)) == "zh"


@pytest.mark.parametrize(
    ("locale", "language"),
    [("zh-CN", "zh"), ("en_US", "en"), ("zh_TW.UTF-8", "zh"), ("ZH", "zh"), (" en ", "en")],
)
def test_locale_to_language(locale: str, language: str) -> None:
    assert language_of_locale(locale) == language


@pytest.mark.parametrize(
    ("text", "known", "hint", "expected"),
    [
        ("ok", "zh", "en-US", "zh"),  # what we know of the customer beats the channel
        ("help", None, "zh-CN", "zh"),  # nothing known: the channel's locale
        ("ok", "fr", "zh-CN", "zh"),  # an unsupported preference is no preference
        ("My deposit has not arrived after three hours", "zh", None, "en"),  # text decides
    ],
)
def test_short_text_falls_back_to_the_customer_then_the_channel(
    text: str, known: str | None, hint: str | None, expected: str
) -> None:
    assert detect_language(text, hint, ("en", "zh"), known=known) == expected


def test_the_callers_menu_choice_sets_the_language() -> None:

    from services.ingest.customers import CustomerRef
    from services.ingest.model import IvrMenus, MenuChoice, ParsedMessage, ParserConfig
    from services.ingest.parsers.calllog import parse_calllog
    from services.ingest.pipeline import Prepared, language_of

    topics = {"1": MenuChoice(category="stolen_funds")}
    config = ParserConfig(
        ivr=IvrMenus(lines={"+85230018888": {"2": MenuChoice(language="zh", menu=topics)}})
    )
    log = (
        b'{"call_id": "c-1", "from": "+85291234567", "to": "+85230018888", '
        b'"ivr_path": ["2", "1"], "transcript": "hello my bitcoin is gone", '
        b'"started_at": "2026-12-01T10:00:00Z"}'
    )
    [parsed] = parse_calllog(log, config)
    assert isinstance(parsed, ParsedMessage)
    prepared = Prepared(parsed, parsed.text, None, ())

    # English words, but the caller chose Chinese in the menu: replies go in Chinese.
    assert language_of(prepared, CustomerRef("cus_1"), ("en", "zh")) == "zh"
    assert parsed.category_hint == "stolen_funds"
