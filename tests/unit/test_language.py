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
