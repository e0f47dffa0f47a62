"""What a customer message is about, and the facts in it agents and routing rules use.

`classify` is pure: the (already redacted) text, the detected language, the rules from
policy/classify.yaml and what redaction removed go in; a `Classification` comes out.
How rules score, negate and compete is described at the top of policy/classify.yaml.

Signals
    * tx hashes: 0x + 64 hex (EVM) and bare 64 hex (BTC, TRON, ...), lower-cased
      since hex case carries no meaning. A bare 64-hex string that redact kept is a
      hash by redact's rule (no private-key cue near it).
    * addresses, as written (EIP-55 capitals are a checksum, base58 is case
      sensitive): EVM 0x + 40 hex → "eth"; bc1… with a valid bech32/bech32m checksum
      and legacy 1…/3… with a valid base58check → "btc"; T… base58check version 0x41
      → "tron"; Solana (32-byte base58, no checksum to test) only with a Solana cue
      within 60 characters, since any 32–44 character base58 word would match.
    * amounts: a number followed by a known ticker or alias ("0.5 BTC", "1,200 USDT",
      "2 个 ETH", "5000u").
    * account UIDs and order ids after their labels ("UID 12345678", "订单号 …").
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Literal, Self, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from services.ingest.redact import (
    B58_CLASS,
    MARKER_PATTERN,
    RedactionKind,
    b58check_payload,
    b58decode,
)
from shared.contracts.common import CATEGORIES, Category
from shared.contracts.messages import Amount, Redaction, Signals, WalletAddress

_FLAGS = re.IGNORECASE
_MAX_LABEL_CHARS = 40
_MAX_REASONS = 16

_T = TypeVar("_T")


class RulesError(ValueError):
    """policy/classify.yaml is missing, not YAML, or does not validate."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, _FLAGS)
    except re.error as exc:
        raise ValueError(f"bad regex {pattern!r}: {exc}") from exc


def _compile_any(patterns: Iterable[str]) -> re.Pattern[str] | None:
    patterns = list(patterns)
    if not patterns:
        return None
    return _compile("|".join(f"(?:{p})" for p in patterns))


class Rule(_Strict):
    phrase: str | None = Field(default=None, description="Literal wording, case-insensitive")
    regex: str | None = Field(default=None, description="Python regex, case-insensitive")
    label: str | None = Field(default=None, description="What reasons quote; required for regex")
    weight: float = Field(default=1.0, gt=0)
    negatable: bool | None = Field(
        default=None, description="Override the category's default (its wording negates itself)"
    )

    @model_validator(mode="after")
    def _one_pattern(self) -> Self:
        if (self.phrase is None) == (self.regex is None):
            raise ValueError("a rule needs exactly one of phrase / regex")
        if self.regex is not None:
            if not self.label:
                raise ValueError(f"regex rule {self.regex!r} needs a label")
            _compile(self.regex)
        return self

    @property
    def name(self) -> str:
        return (self.label or self.phrase or "")[:_MAX_LABEL_CHARS]


class LanguageRules(_Strict):
    scope: Literal["words", "chars"] = Field(
        description="Unit of negation_window: words (space-separated scripts) or characters"
    )
    negation_window: int = Field(ge=0, le=20)
    clause_breaks: str
    negations: tuple[str, ...] = ()
    not_negations: tuple[str, ...] = ()
    howto: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    categories: dict[Category, tuple[Rule, ...]]

    _rules: tuple[tuple[Category, Rule, re.Pattern[str]], ...] = PrivateAttr()
    _clause: re.Pattern[str] = PrivateAttr()
    _negation: re.Pattern[str] | None = PrivateAttr()
    _not_negation: re.Pattern[str] | None = PrivateAttr()
    _howto: re.Pattern[str] | None = PrivateAttr()
    _problem: re.Pattern[str] | None = PrivateAttr()

    def model_post_init(self, context: object, /) -> None:
        self._clause = _compile(self.clause_breaks)
        self._negation = _compile_any(self.negations)
        self._not_negation = _compile_any(self.not_negations)
        self._howto = _compile_any(self.howto)
        self._problem = _compile_any(self.problems)
        self._rules = tuple(
            (category, rule, self._rule_pattern(rule))
            for category, rules in self.categories.items()
            for rule in rules
        )

    def _rule_pattern(self, rule: Rule) -> re.Pattern[str]:
        if rule.regex is not None:
            return _compile(rule.regex)
        words = (rule.phrase or "").split()
        body = r"\s+".join(re.escape(w) for w in words)
        if self.scope == "words":
            body = rf"(?<!\w){body}(?!\w)"
        return _compile(body)


class SignalRules(_Strict):
    assets: tuple[str, ...]
    asset_aliases: dict[str, str] = {}
    uid_labels: tuple[str, ...]
    order_labels: tuple[str, ...]
    solana_cues: tuple[str, ...] = ()

    _amount: re.Pattern[str] = PrivateAttr()
    _uid: re.Pattern[str] = PrivateAttr()
    _order: re.Pattern[str] = PrivateAttr()
    _solana_cue: re.Pattern[str] | None = PrivateAttr()
    _assets: frozenset[str] = PrivateAttr()
    _aliases: dict[str, str] = PrivateAttr()

    def model_post_init(self, context: object, /) -> None:
        self._assets = frozenset(a.upper() for a in self.assets)
        self._aliases = {k.upper(): v.upper() for k, v in self.asset_aliases.items()}
        names = sorted({*self._assets, *self._aliases}, key=len, reverse=True)
        asset = "|".join(re.escape(n) for n in names)
        # ("1,200", ".5", " ", "USDT")
        self._amount = _compile(
            rf"(?<![0-9A-Za-z.,])(\d{{1,3}}(?:,\d{{3}})+|\d+)(\.\d+)?(\s*(?:个|枚)?\s*)({asset})(?![A-Za-z])"
        )
        separator = r"\s*(?:is|:|：|=|#|号|是|为)?\s*"
        self._uid = _compile(rf"(?:{'|'.join(self.uid_labels)}){separator}(\d{{5,12}})(?!\d)")
        self._order = _compile(
            rf"(?:{'|'.join(self.order_labels)}){separator}([A-Za-z0-9][A-Za-z0-9-]{{5,40}})"
        )
        self._solana_cue = _compile_any(self.solana_cues)


class ClassifyRules(_Strict):
    """policy/classify.yaml, validated."""

    version: Literal[1]
    min_score: float = Field(gt=0)
    hint_weight: float = Field(ge=0)
    match_all_languages: bool = True
    default_language: str
    secret_redactions: frozenset[RedactionKind]
    precedence: tuple[tuple[Category, ...], ...]
    negatable: frozenset[Category]
    howto_categories: frozenset[Category]
    languages: dict[str, LanguageRules]
    signals: SignalRules

    @model_validator(mode="after")
    def _complete(self) -> Self:
        ranked = [c for tier in self.precedence for c in tier]
        if sorted(ranked) != sorted(CATEGORIES):
            missing = set(CATEGORIES) - set(ranked)
            raise ValueError(f"precedence must list every category once (missing: {missing})")
        if self.default_language not in self.languages:
            raise ValueError(f"default_language {self.default_language!r} has no block")
        return self


class Classification(BaseModel):
    model_config = ConfigDict(frozen=True)

    category: Category
    signals: Signals = Signals()
    reasons: tuple[str, ...] = ()


def default_rules_path() -> Path:
    return Path(__file__).resolve().parents[2] / "policy" / "classify.yaml"


def load_rules(path: Path) -> ClassifyRules:
    """Read and validate the rules; any problem raises `RulesError` naming the file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return ClassifyRules.model_validate(data)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise RulesError(f"{path}: {exc}") from exc


def classify(
    text: str,
    subject: str | None,
    language: str,
    rules: ClassifyRules,
    category_hint: Category | None = None,
    redactions: tuple[Redaction, ...] = (),
) -> Classification:
    """Category by the rules' precedence, the signals in the text, and why, in short."""
    full = f"{subject}\n{text}" if subject else text
    # Markers carry words ("seed_phrase") that rules would otherwise read as the customer's.
    full = MARKER_PATTERN.sub(" ", full).replace("’", "'").replace("‘", "'")
    scores: dict[Category, float] = {}
    reasons: list[str] = []

    for redaction in redactions:
        if redaction.kind in rules.secret_redactions:
            scores["secret_exposed"] = scores.get("secret_exposed", 0) + rules.min_score
            reasons.append(f"redaction: {redaction.kind} → secret_exposed")

    howto = problem = False
    for code, block in _blocks(rules, language):
        _score_block(full, code, block, rules, scores, reasons)
        howto = howto or bool(block._howto and block._howto.search(full))
        problem = problem or bool(block._problem and block._problem.search(full))

    dropped = []
    if howto and not problem:
        for category in sorted(rules.howto_categories):
            if scores.pop(category, 0) > 0:
                dropped.append(category)

    if category_hint is not None and rules.hint_weight > 0:
        scores[category_hint] = scores.get(category_hint, 0) + rules.hint_weight
        reasons.append(f"hint: {category_hint}")

    category = _decide(scores, rules)
    reasons.extend(f"question: how-to {c} → {category}" for c in dropped)
    if not reasons:
        reasons.append("no rule matched → general")
    return Classification(
        category=category, signals=extract_signals(full, rules.signals), reasons=tuple(reasons)
    )


def _blocks(rules: ClassifyRules, language: str) -> list[tuple[str, LanguageRules]]:
    primary = language if language in rules.languages else rules.default_language
    blocks = [(primary, rules.languages[primary])]
    if rules.match_all_languages:
        blocks += [(code, block) for code, block in rules.languages.items() if code != primary]
    return blocks


def _score_block(
    text: str,
    code: str,
    block: LanguageRules,
    rules: ClassifyRules,
    scores: dict[Category, float],
    reasons: list[str],
) -> None:
    breaks: list[int] | None = None
    for category, rule, pattern in block._rules:
        negatable = rule.negatable if rule.negatable is not None else category in rules.negatable
        negated_by: str | None = None
        for match in pattern.finditer(text):
            if negatable:
                if breaks is None:
                    breaks = [m.end() for m in block._clause.finditer(text)]
                negated_by = _negation_before(text, match.start(), match.end(), block, breaks)
                if negated_by is not None:
                    continue
            scores[category] = scores.get(category, 0) + rule.weight
            _add_reason(reasons, f"matched {code}:{category} '{rule.name}'")
            break
        else:
            if negated_by is not None:
                joiner = " " if block.scope == "words" else ""
                _add_reason(reasons, f"negated: '{negated_by}{joiner}{rule.name}'")


def _negation_before(
    text: str, start: int, end: int, block: LanguageRules, breaks: list[int]
) -> str | None:
    """The negation cue standing just before text[start:end] in its clause, if any."""
    if block._negation is None or block.negation_window == 0:
        return None
    clause_start = 0
    position = bisect.bisect_right(breaks, start) - 1
    if position >= 0:
        clause_start = breaks[position]
    if block.scope == "words":
        words = list(re.finditer(r"\S+", text[clause_start:start]))[-block.negation_window :]
        window_start = clause_start + words[0].start() if words else start
    else:
        window_start = max(clause_start, start - block.negation_window)
    look_alikes = []
    if block._not_negation is not None:
        look_alikes = [
            (clause_start + m.start(), clause_start + m.end())
            for m in block._not_negation.finditer(text[clause_start:end])
        ]
    for cue in block._negation.finditer(text, window_start, start):
        inside = any(a <= cue.start() and cue.end() <= b for a, b in look_alikes)
        if not inside:
            left = cue.start()
            if block.scope == "words":
                # report "didn't", not the "n't" the cue matched
                while left > window_start and not text[left - 1].isspace():
                    left -= 1
            return text[left : cue.end()].strip().lower()
    return None


def _add_reason(reasons: list[str], reason: str) -> None:
    if reason not in reasons and len(reasons) < _MAX_REASONS:
        reasons.append(reason)


def _decide(scores: dict[Category, float], rules: ClassifyRules) -> Category:
    for tier in rules.precedence:
        contenders = [c for c in tier if scores.get(c, 0) >= rules.min_score]
        if contenders:
            # max keeps the first of equals: the order written in the tier breaks ties
            return max(contenders, key=lambda c: scores[c])
    return "general"


# --- signals ---------------------------------------------------------------------------

_TX_EVM = re.compile(r"(?<![0-9A-Za-z])0[xX][0-9a-fA-F]{64}(?![0-9A-Za-z])")
_TX_BARE = re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{64}(?![0-9A-Za-z])")
_EVM_ADDRESS = re.compile(r"(?<![0-9A-Za-z])0[xX][0-9a-fA-F]{40}(?![0-9A-Za-z])")
_BECH32 = re.compile(
    r"(?<![0-9A-Za-z])(?:bc1[02-9ac-hj-np-z]{8,87}|BC1[02-9AC-HJ-NP-Z]{8,87})(?![0-9A-Za-z])"
)
_BTC_LEGACY = re.compile(rf"(?<![{B58_CLASS}])[13][{B58_CLASS}]{{25,34}}(?![{B58_CLASS}])")
_TRON = re.compile(rf"(?<![{B58_CLASS}])T[{B58_CLASS}]{{33}}(?![{B58_CLASS}])")
_BASE58_WORD = re.compile(rf"(?<![{B58_CLASS}])[{B58_CLASS}]{{32,44}}(?![{B58_CLASS}])")
_SOLANA_CUE_CHARS = 60
_BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_CONSTANTS = (1, 0x2BC830A3)  # bech32 (segwit v0), bech32m (v1+, taproot)
_TRON_VERSION = 0x41
_BTC_VERSIONS = (0x00, 0x05)
_SOLANA_KEY_BYTES = 32


def extract_signals(text: str, rules: SignalRules) -> Signals:
    """Tx hashes, addresses, amounts, UIDs and order ids in order of appearance, deduplicated."""
    hashes = _unique(
        m.group().lower() for pattern in (_TX_EVM, _TX_BARE) for m in pattern.finditer(text)
    )
    addresses = _addresses(text, rules)
    amounts = _unique(_amounts(text, rules))
    uids = _unique(m.group(1) for m in rules._uid.finditer(text))
    orders = _unique(
        m.group(1) for m in rules._order.finditer(text) if sum(c.isdigit() for c in m.group(1)) >= 6
    )
    return Signals(
        tx_hashes=hashes,
        addresses=addresses,
        amounts=amounts,
        account_uids=uids,
        order_ids=orders,
    )


def _unique(items: Iterable[_T]) -> tuple[_T, ...]:
    return tuple(dict.fromkeys(items))


def _addresses(text: str, rules: SignalRules) -> tuple[WalletAddress, ...]:
    found: list[tuple[int, int, WalletAddress]] = []
    for match in _EVM_ADDRESS.finditer(text):
        found.append(
            (match.start(), match.end(), WalletAddress(chain="eth", address=match.group()))
        )
    for match in _BECH32.finditer(text):
        if _bech32_valid(match.group().lower()):
            found.append(
                (match.start(), match.end(), WalletAddress(chain="btc", address=match.group()))
            )
    for match in _BTC_LEGACY.finditer(text):
        payload = b58check_payload(match.group())
        if payload is not None and len(payload) == 21 and payload[0] in _BTC_VERSIONS:
            found.append(
                (match.start(), match.end(), WalletAddress(chain="btc", address=match.group()))
            )
    for match in _TRON.finditer(text):
        payload = b58check_payload(match.group())
        if payload is not None and len(payload) == 21 and payload[0] == _TRON_VERSION:
            found.append(
                (match.start(), match.end(), WalletAddress(chain="tron", address=match.group()))
            )
    if rules._solana_cue is not None and rules._solana_cue.search(text):
        taken = [(s, e) for s, e, _ in found]
        taken += [m.span() for pattern in (_TX_EVM, _TX_BARE) for m in pattern.finditer(text)]
        found.extend(_solana(text, rules._solana_cue, taken))
    found.sort(key=lambda item: item[0])
    return _unique(address for _, _, address in found)


def _solana(
    text: str, cue: re.Pattern[str], taken: list[tuple[int, int]]
) -> Iterator[tuple[int, int, WalletAddress]]:
    for match in _BASE58_WORD.finditer(text):
        start, end = match.span()
        if any(s < end and start < e for s, e in taken):
            continue
        near = text[max(0, start - _SOLANA_CUE_CHARS) : end + _SOLANA_CUE_CHARS]
        raw = b58decode(match.group())
        if cue.search(near) and raw is not None and len(raw) == _SOLANA_KEY_BYTES:
            yield start, end, WalletAddress(chain="sol", address=match.group())


def _bech32_valid(address: str) -> bool:
    hrp, _, data = address.rpartition("1")
    if hrp != "bc" or len(data) < 6:
        return False
    values = [_BECH32_CHARSET.find(c) for c in data]
    if -1 in values:
        return False
    checksum = 1
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp] + values
    generators = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    for value in expanded:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value
        for i, generator in enumerate(generators):
            if (top >> i) & 1:
                checksum ^= generator
    return checksum in _BECH32_CONSTANTS


def _amounts(text: str, rules: SignalRules) -> Iterator[Amount]:
    for match in rules._amount.finditer(text):
        whole, fraction, gap, name = match.groups()
        name = name.upper()
        asset = name if name in rules._assets else rules._aliases.get(name)
        if asset is None:
            continue
        if name in rules._aliases and len(name) == 1 and gap:
            continue
        yield Amount(value=Decimal(whole.replace(",", "") + (fraction or "")), asset=asset)
