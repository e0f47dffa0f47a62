"""Which of the deployment's languages a customer wrote in: offline, with lingua.

Rules, in order:
  * no letters at all (empty, digits, emoji) → the locale hint if supported, else "en";
  * more Han characters than other words, and no kana → "zh" (a support message
    in Chinese is often half tickers, hashes and UIDs: "UID 12345678 提现");
  * short text (under 12 letters: "ok", "hi", "help") → the customer's known
    language, else the channel's locale hint, because a few letters say little;
  * otherwise lingua restricted to `supported`, falling back to the hint when lingua
    cannot decide or is unsure.
"""

from __future__ import annotations

import functools
import re

from lingua import IsoCode639_1, LanguageDetector, LanguageDetectorBuilder

from services.ingest.redact import MARKER_PATTERN

DEFAULT_LANGUAGE = "en"
_SHORT_TEXT_LETTERS = 12
# Below this confidence (0..1) a supported hint is trusted over the detector.
_MIN_CONFIDENCE = 0.7

_LETTER = re.compile(r"[^\W\d_]")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# Words of letters only: "0x742d35Cc…" or "bc1q…" are not English words.
_NON_HAN_WORD = re.compile(
    r"(?<![0-9A-Za-z])[^\W\d_\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+(?![0-9A-Za-z])"
)
_KANA = re.compile(r"[\u3040-\u30ff]")
_LOCALE_SEPARATOR = re.compile(r"[-_.@]")


def detect_language(
    text: str,
    hint: str | None,
    supported: tuple[str, ...] = ("en", "zh"),
    *,
    known: str | None = None,
) -> str:
    """ISO 639-1 code of the text's language, one of `supported` (or "en" with no clue).

    `hint` is the channel's locale ("zh-CN"); `known` the customer's preferred language.
    """
    hinted = language_of_locale(hint) if hint else None
    if hinted not in supported:
        hinted = None
    if known in supported:
        hinted = known
    fallback = hinted or (DEFAULT_LANGUAGE if DEFAULT_LANGUAGE in supported else supported[0])
    # "[REDACTED:seed_phrase]" is ours, not the customer's English
    text = MARKER_PATTERN.sub(" ", text)
    letters = len(_LETTER.findall(text))
    if letters == 0 or len(supported) == 1:
        return fallback
    # A Han character carries about a word's worth of meaning, so weigh it against words.
    han = len(_HAN.findall(text))
    words = len(_NON_HAN_WORD.findall(text))
    if "zh" in supported and han > words and not _KANA.search(text):
        return "zh"
    if hinted and letters < _SHORT_TEXT_LETTERS:
        return hinted
    confidences = _detector(supported).compute_language_confidence_values(text)
    if not confidences:
        return fallback
    best = confidences[0]
    if hinted and best.value < _MIN_CONFIDENCE:
        return hinted
    return best.language.iso_code_639_1.name.lower()


def language_of_locale(locale: str) -> str:
    """The language subtag of a locale: "zh-CN" → "zh", "en_US" → "en", "zh_TW.UTF-8" → "zh"."""
    return _LOCALE_SEPARATOR.split(locale.strip(), maxsplit=1)[0].lower()


@functools.cache
def _detector(supported: tuple[str, ...]) -> LanguageDetector:
    # Built once per language set: loading lingua's models is the expensive part.
    codes = [IsoCode639_1.from_str(code) for code in supported]
    return LanguageDetectorBuilder.from_iso_codes_639_1(*codes).build()
