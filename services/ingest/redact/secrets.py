"""Remove secrets a customer pasted into a message before anything stores or logs it.

`redact(text)` returns the text with every secret replaced by a fixed marker
(`[REDACTED:<kind>]`) and, per kind, how many were removed — never the secret itself.

Seed phrases (BIP-39, every word list `mnemonic` ships)
    Words are matched case-insensitively after NFKD normalisation, so accents typed
    composed or decomposed, Korean syllables and Japanese kana all match; accent-free
    spellings of French/Spanish/... words match too when unambiguous. Words may be
    separated by spaces, commas, new lines or numbering ("1. abandon 2. ability").
    A *run* is a sequence of words of one list with only such separators between them.

    * Exact: a checksum-valid window of 12/15/18/21/24 words of one list, with at most
      two repeated words (tables of TRUE/FALSE are not phrases), is redacted with the
      rest of its run when at least three words are left over on that side (the rest
      of a mistyped longer phrase); one or two are the customer's own words
      ("seed: ...", "... what now").
    * Near miss: a run that fails the checksum is still redacted when it is shaped like
      a phrase: at least 11 list words (one may be missing) plus at most one typo (a
      word sharing its first four letters with a list word, or one edit away), and
      numbered 1, 2, 3 ..., or one word per line, or alone on its line with no full
      stop, or after a seed-phrase cue ("seed", "mnemonic", "助记词", ...). Length alone
      never qualifies: plain English strings a dozen list words together ("can you
      please help someone will transfer all balance again today still ...").
    * Chinese lists, characters written without separators: checksum-valid window
      only, and only when the window is a whole run of Han characters standing apart
      from other Han text, or starts right after a cue ("助记词是", "助记词：").
      Its characters must also look drawn at random: the lists are frequency-ordered,
      so at least two thirds must rank outside the top 150 and the mean rank must be
      at least 500 (misses about 1 random phrase in 700; passes a few percent of prose
      windows, which the checksum and the position rules cut further). Without these
      guards about one Chinese clause in a few dozen would pass a 4-bit checksum.

Private keys
    * 64 hex digits (with or without 0x) are ambiguous: transaction hashes look the
      same. The nearest cue within 60 characters before or 30 after decides: "private
      key", "privkey", "secret", "私钥", "密钥" ... → key (redacted); "tx", "txid",
      "hash", "交易哈希", "充值" ... → transaction hash (kept, classify extracts it).
      With no cue at all the string is kept: pasted transaction hashes are by far the
      common case and deposit tracing needs them.
    * WIF keys (base58check, version 0x80/0xEF, 32 bytes with optional 0x01) only when
      the checksum holds: the bare shape is too generic.
    * Extended private keys (xprv, yprv, zprv, tprv, uprv, vprv, Yprv, Zprv, ...) by
      prefix and length alone: nothing else looks like that, and a mistyped one still
      exposes the whole wallet.

Passwords and one-time codes
    "password: X", "pwd=X", "my password is X", "密码是X", "密码：X"; "2FA code 123456",
    "验证码 123456", "Google Authenticator code is 654321". After "is"/"was" a word of
    plain letters is read as a description ("is wrong", "is tiresome"), not a password:
    exchanges require digits, symbols or capitals, so "my password is Hunter22" is
    redacted and "my password is changed" is not. "password: X" takes any X that is not
    a state word ("password: reset").

Redacting is idempotent: markers are barriers that nothing matches into, and cues are
never read from inside a marker.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from mnemonic import Mnemonic

from shared.contracts.messages import Redaction

RedactionKind = Literal["seed_phrase", "private_key", "password", "otp_code"]

# Strongest first: when spans overlap, the merged span is reported as the strongest kind.
KINDS: tuple[RedactionKind, ...] = ("seed_phrase", "private_key", "password", "otp_code")
MARKERS: dict[RedactionKind, str] = {kind: f"[REDACTED:{kind}]" for kind in KINDS}

MARKER_PATTERN = re.compile(r"\[REDACTED:(?:seed_phrase|private_key|password|otp_code)\]")
# Markers are blanked to this before detection so nothing matches into or across them;
# it is neither a letter, digit, separator nor password character.
_BARRIER = "\x00"


@dataclass(frozen=True, slots=True)
class _Span:
    start: int
    end: int
    kind: RedactionKind
    count: int = 1


def redact(text: str) -> tuple[str, tuple[Redaction, ...]]:
    """Replace secrets with `[REDACTED:<kind>]` markers; report kind and count only."""
    if not text:
        return text, ()
    masked = (
        MARKER_PATTERN.sub(lambda m: _BARRIER * len(m.group()), text)
        if "[REDACTED:" in text
        else text
    )
    spans = [
        *_private_key_spans(masked),
        *_seed_phrase_spans(masked),
        *_password_spans(masked),
        *_otp_spans(masked),
    ]
    if not spans:
        return text, ()
    merged = _merge(spans)
    counts: dict[RedactionKind, int] = {}
    parts: list[str] = []
    cursor = 0
    for span in merged:
        parts.append(text[cursor : span.start])
        parts.append(MARKERS[span.kind])
        counts[span.kind] = counts.get(span.kind, 0) + span.count
        cursor = span.end
    parts.append(text[cursor:])
    report = tuple(Redaction(kind=kind, count=counts[kind]) for kind in KINDS if kind in counts)
    return "".join(parts), report


def _merge(spans: list[_Span]) -> list[_Span]:
    spans.sort(key=lambda s: (s.start, -s.end))
    groups: list[list[_Span]] = []
    end = -1
    for span in spans:
        if groups and span.start < end:
            groups[-1].append(span)
            end = max(end, span.end)
        else:
            groups.append([span])
            end = span.end
    merged = []
    for group in groups:
        kind = min((s.kind for s in group), key=KINDS.index)
        # overlapping spans of one kind are the same secret seen twice (two word lists)
        count = max(s.count for s in group if s.kind == kind)
        merged.append(_Span(group[0].start, max(s.end for s in group), kind, count))
    return merged


# --- base58check, shared by WIF and extended keys -------------------------------------

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}
B58_CLASS = "1-9A-HJ-NP-Za-km-z"  # regex character class body


def b58decode(encoded: str) -> bytes | None:
    """Base58 (Bitcoin alphabet) to bytes, or None if a character is not base58."""
    number = 0
    for char in encoded:
        digit = _B58_INDEX.get(char)
        if digit is None:
            return None
        number = number * 58 + digit
    leading_zeros = len(encoded) - len(encoded.lstrip("1"))
    return b"\0" * leading_zeros + number.to_bytes((number.bit_length() + 7) // 8, "big")


def b58check_payload(encoded: str) -> bytes | None:
    """The payload of a base58check string, or None if it is not valid base58check."""
    raw = b58decode(encoded)
    if raw is None or len(raw) < 5:
        return None
    payload, checksum = raw[:-4], raw[-4:]
    if hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] != checksum:
        return None
    return payload


# --- private keys ---------------------------------------------------------------------

_HEX64 = re.compile(r"(?<![0-9A-Za-z])(?:0[xX])?[0-9a-fA-F]{64}(?![0-9A-Za-z])")
_KEY_CUE = re.compile(
    r"private[\s_-]*key|priv[\s_-]*key|\bpk\b|secret|\bkey\b|私钥|私鑰|秘钥|密钥|密鑰|秘鑰",
    re.IGNORECASE,
)
_HASH_CUE = re.compile(
    r"\btx(?:id|n|hash|s)?\b|hash|transaction|\btrx\b|explorer|scan|/tx/|区块|區塊|"
    r"交易|哈希|转账|轉賬|充值|提现|提币|提幣|deposit|withdraw|transfer",
    re.IGNORECASE,
)
_CUE_BEFORE_CHARS = 60
_CUE_AFTER_CHARS = 30

_WIF = re.compile(rf"(?<![{B58_CLASS}])[5KL9c][{B58_CLASS}]{{50,51}}(?![{B58_CLASS}])")
_XPRV = re.compile(
    rf"(?<![{B58_CLASS}])(?:[xyztuv]prv|[YZUV]prv)[{B58_CLASS}]{{100,112}}(?![{B58_CLASS}])"
)


def _private_key_spans(text: str) -> Iterator[_Span]:
    for match in _HEX64.finditer(text):
        if _hex_is_key(text, match.start(), match.end()):
            yield _Span(match.start(), match.end(), "private_key")
    for match in _WIF.finditer(text):
        if _is_wif(match.group()):
            yield _Span(match.start(), match.end(), "private_key")
    for match in _XPRV.finditer(text):
        yield _Span(match.start(), match.end(), "private_key")


def _hex_is_key(text: str, start: int, end: int) -> bool:
    before_from = max(0, start - _CUE_BEFORE_CHARS)
    before = text[before_from:start]
    after = text[end : end + _CUE_AFTER_CHARS]

    def nearest(pattern: re.Pattern[str]) -> int | None:
        distances = [len(before) - m.end() for m in pattern.finditer(before)]
        distances += [m.start() for m in pattern.finditer(after)]
        return min(distances, default=None)

    key, tx = nearest(_KEY_CUE), nearest(_HASH_CUE)
    if key is None:
        return False
    return tx is None or key <= tx


def _is_wif(candidate: str) -> bool:
    payload = b58check_payload(candidate)
    if payload is None or payload[0] not in (0x80, 0xEF):
        return False
    return len(payload) == 33 or (len(payload) == 34 and payload[-1] == 0x01)


# --- seed phrases ---------------------------------------------------------------------

_VALID_LENGTHS = (24, 21, 18, 15, 12)
_MIN_NEAR_MISS_WORDS = 11
_MAX_REPEATS = 2
_MIN_LEFTOVER_WORDS = 3
_HAN_COMMON_RANK = 150
_HAN_RARE_SHARE = 2 / 3
_HAN_MIN_MEAN_RANK = 500
_CUE_CONNECTORS = " \t\n:：是为為如下,，"
_MAX_CONNECTOR_CHARS = 4
_SEED_CUE_BEFORE_CHARS = 60
_MAX_GAP_CHARS = 12

_HAN_RANGES = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_HAN_CHAR = re.compile(f"[{_HAN_RANGES}]")
# Word characters include combining marks (decomposed accents, kana voicing) and U+FFFD:
# mnemonic's Russian list has a word with two of them, and it is matched as shipped.
_TOKEN = re.compile(
    rf"(?P<han>[{_HAN_RANGES}])"
    rf"|(?P<word>(?:[^\W\d_{_HAN_RANGES}]|[\u0300-\u036f\u3099\u309a\ufffd])+)"
)
# What may stand between two words of a phrase: separators and numbering, nothing else.
_GAP = re.compile(r"[\s\d.,;:、，；：。·•・\-–—/|()（）\[\]【】\"'“”‘’#*>]*")
_NUMBER_BEFORE = re.compile(r"(\d{1,2})\s*[.)）:：、\-]?\s*$")
_SEED_CUE = re.compile(
    r"seed|phrase|mnemoni|recovery|backup|secret\s+words|\b(?:12|15|18|21|24)\s+words|"
    r"助记词|助記詞|种子|種子|恢复词|恢復詞|シード|ニーモニック|復元|니모닉|시드|복구|"
    r"semilla|semente|\bseme\b|mn[ée]monique|fr[aá]ze|frase|мнемон|сид",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"[.?!。？！]")
_LATIN_ALIAS_LANGUAGES = frozenset(
    {"french", "spanish", "portuguese", "italian", "czech", "turkish", "russian"}
)


# [first, last+1) token ranges whose tokens are all words of one list, in text order;
# two ranges may be bridged by one near-miss word between them.
_Segments = tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class _WordList:
    language: str
    han: bool
    index: dict[str, int]
    prefixes: frozenset[str]


@dataclass(frozen=True, slots=True)
class _Token:
    start: int
    end: int
    norm: str
    han: bool
    mask: int


def _normalize(word: str) -> str:
    if word.isascii():
        return word.lower()
    return unicodedata.normalize("NFKD", word.casefold())


def _strip_marks(word: str) -> str:
    return "".join(c for c in word if not unicodedata.combining(c))


@functools.cache
def _wordlists() -> tuple[_WordList, ...]:
    lists = []
    for language in sorted(Mnemonic.list_languages()):
        words = [_normalize(w) for w in Mnemonic(language).wordlist]
        index = {word: i for i, word in enumerate(words)}
        if language in _LATIN_ALIAS_LANGUAGES:
            aliases: dict[str, list[int]] = {}
            for i, word in enumerate(words):
                # Turkish dotless ı does not survive upper-casing and back
                alias = _strip_marks(word).replace("ı", "i")
                if alias != word:
                    aliases.setdefault(alias, []).append(i)
            for alias, positions in aliases.items():
                if len(positions) == 1 and alias not in index:
                    index[alias] = positions[0]
        han = language.startswith("chinese")
        prefixes = frozenset(w[:4] for w in words if len(w) >= 4)
        lists.append(_WordList(language, han, index, prefixes))
    return tuple(lists)


@functools.cache
def _membership() -> dict[str, int]:
    """Normalised word → bit mask of the word lists that contain it."""
    masks: dict[str, int] = {}
    for bit, wordlist in enumerate(_wordlists()):
        for word in wordlist.index:
            masks[word] = masks.get(word, 0) | (1 << bit)
    return masks


@functools.cache
def _one_edit_variants(bit: int) -> frozenset[str]:
    """Every word of a list with one character deleted, plus the words themselves."""
    variants: set[str] = set()
    for word in _wordlists()[bit].index:
        variants.add(word)
        variants.update(word[:i] + word[i + 1 :] for i in range(len(word)))
    return frozenset(variants)


def _is_near(token: _Token, bit: int) -> bool:
    """Could this non-list word be a typo of a word of list `bit`?"""
    wordlist = _wordlists()[bit]
    if wordlist.han:
        return token.han
    word = token.norm
    if token.han or len(word) < 4:
        return False
    if word[:4] in wordlist.prefixes:
        return True
    variants = _one_edit_variants(bit)
    # missing letter (word is a deletion), extra letter, or one substituted letter
    return word in variants or any(word[:i] + word[i + 1 :] in variants for i in range(len(word)))


def _phrase_like(indices: Sequence[int]) -> bool:
    """Checksum plus few repeats: random phrases rarely repeat a word, tables and prose do."""
    return len(set(indices)) >= len(indices) - _MAX_REPEATS and checksum_ok(indices)


def checksum_ok(indices: Sequence[int]) -> bool:
    """BIP-39 checksum over word indices, the same test as `Mnemonic.check`."""
    count = len(indices)
    if count not in _VALID_LENGTHS:
        return False
    bits = 0
    for index in indices:
        bits = (bits << 11) | index
    checksum_bits = count // 3
    entropy = bits >> checksum_bits
    entropy_bytes = (11 * count - checksum_bits) // 8
    digest = hashlib.sha256(entropy.to_bytes(entropy_bytes, "big")).digest()
    return digest[0] >> (8 - checksum_bits) == bits & ((1 << checksum_bits) - 1)


def _tokenize(text: str) -> list[_Token]:
    membership = _membership()
    tokens = []
    for match in _TOKEN.finditer(text):
        han = match.lastgroup == "han"
        norm = _normalize(match.group())
        tokens.append(_Token(match.start(), match.end(), norm, han, membership.get(norm, 0)))
    return tokens


class _SeedScan:
    """Finds seed-phrase spans in one text; holds the tokens and cue positions."""

    def __init__(self, text: str, tokens: list[_Token]) -> None:
        self.text = text
        self.tokens = tokens
        self._cue_ends: list[int] | None = None
        self._phrase_starts: set[int] | None = None
        # joinable[i]: token i may follow token i-1 inside a phrase
        self.joinable = [False] * len(tokens)
        for i in range(1, len(tokens)):
            gap = text[tokens[i - 1].end : tokens[i].start]
            self.joinable[i] = gap in ("", " ") or (
                len(gap) <= _MAX_GAP_CHARS and _GAP.fullmatch(gap) is not None
            )

    def gap_before(self, i: int) -> str:
        previous_end = self.tokens[i - 1].end if i > 0 else 0
        return self.text[previous_end : self.tokens[i].start]

    def cue_before(self, start: int, end: int) -> bool:
        if self._cue_ends is None:
            self._cue_ends = [m.end() for m in _SEED_CUE.finditer(self.text)]
        return any(start - _SEED_CUE_BEFORE_CHARS <= e <= end for e in self._cue_ends)

    def follows_cue(self, start: int) -> bool:
        """Does a phrase starting here directly follow a cue ("助记词是", "seed phrase:")?"""
        if self._phrase_starts is None:
            self._phrase_starts = set()
            for match in _SEED_CUE.finditer(self.text):
                position = match.end()
                limit = position + _MAX_CONNECTOR_CHARS
                while position < min(limit, len(self.text)) and (
                    self.text[position] in _CUE_CONNECTORS
                ):
                    position += 1
                self._phrase_starts.add(position)
        return start in self._phrase_starts

    def spans(self) -> Iterator[_Span]:
        counts = [0] * len(_wordlists())
        for token in self.tokens:
            mask = token.mask
            while mask:
                low = mask & -mask
                counts[low.bit_length() - 1] += 1
                mask ^= low
        for bit, count in enumerate(counts):
            if count >= _MIN_NEAR_MISS_WORDS:
                yield from self._spans_for(bit)

    def _segments(self, bit: int) -> list[tuple[int, int]]:
        """Maximal [first, last+1) token ranges that are all words of list `bit`."""
        flag = 1 << bit
        segments = []
        start = -1
        for i, token in enumerate(self.tokens):
            if token.mask & flag:
                if start < 0 or not self.joinable[i]:
                    if start >= 0:
                        segments.append((start, i))
                    start = i
            elif start >= 0:
                segments.append((start, i))
                start = -1
        if start >= 0:
            segments.append((start, len(self.tokens)))
        return segments

    def _groups(self, bit: int) -> list[_Segments]:
        """Segments of at least 11 words, and pairs bridged by one near-miss word."""
        segments = self._segments(bit)
        groups: list[_Segments] = []
        i = 0
        while i < len(segments):
            current = segments[i]
            if i + 1 < len(segments):
                following = segments[i + 1]
                bridge = current[1]
                if (
                    following[0] == bridge + 1
                    and self.joinable[bridge]
                    and self.joinable[following[0]]
                    and _is_near(self.tokens[bridge], bit)
                    and (current[1] - current[0]) + (following[1] - following[0])
                    >= _MIN_NEAR_MISS_WORDS
                ):
                    groups.append((current, following))
                    i += 2
                    continue
            if current[1] - current[0] >= _MIN_NEAR_MISS_WORDS:
                groups.append((current,))
            i += 1
        return groups

    def _spans_for(self, bit: int) -> Iterator[_Span]:
        wordlist = _wordlists()[bit]
        for group in self._groups(bit):
            if not wordlist.han:
                yield from self._phrase_spans(bit, wordlist, group)
                continue
            # Han characters written without separators follow stricter rules; the parts
            # written with separators ("的 一 是 ...") are treated like words.
            yield from self._tight_han_spans(wordlist, group)
            for part in self._separated_parts(group):
                yield from self._phrase_spans(bit, wordlist, part)

    def _separated_parts(self, group: _Segments) -> Iterator[_Segments]:
        first, last = group[0][0], group[-1][1]
        bounds = [first, *(i for i in range(first + 1, last) if not self._separated(i)), last]
        for part_first, part_last in itertools.pairwise(bounds):
            if part_last - part_first < _MIN_NEAR_MISS_WORDS:
                continue
            pieces = tuple(
                (max(a, part_first), min(b, part_last))
                for a, b in group
                if a < part_last and part_first < b
            )
            if pieces:
                yield pieces

    def _phrase_spans(self, bit: int, wordlist: _WordList, group: _Segments) -> Iterator[_Span]:
        first, last = group[0][0], group[-1][1]
        windows = [w for seg in group for w in self._windows(wordlist, seg)]
        if not windows:
            for piece_first, piece_last, numbered in self._near_misses(bit, first, last):
                yield self._span(piece_first, piece_last, numbered=numbered, count=1)
            return
        # Words left over around valid windows are redacted too when there are enough
        # of them to be the rest of a mistyped phrase; one or two are the customer's
        # own words ("seed: ...", "... what now").
        if windows[0][0] - first < _MIN_LEFTOVER_WORDS:
            first = windows[0][0]
        if last - windows[-1][1] < _MIN_LEFTOVER_WORDS:
            last = windows[-1][1]
        numbered = self._numbered(first, last)
        yield self._span(first, last, numbered=numbered, count=len(windows))

    def _span(self, first: int, last: int, *, numbered: bool, count: int) -> _Span:
        start = self.tokens[first].start
        number = _NUMBER_BEFORE.search(self.gap_before(first)) if numbered else None
        if number:
            start -= len(number.group())
        return _Span(start, self.tokens[last - 1].end, "seed_phrase", count)

    def _separated(self, i: int) -> bool:
        return self.tokens[i].start > self.tokens[i - 1].end

    def _indices(self, wordlist: _WordList, first: int, last: int) -> list[int]:
        return [wordlist.index[t.norm] for t in self.tokens[first:last]]

    def _windows(self, wordlist: _WordList, segment: tuple[int, int]) -> list[tuple[int, int]]:
        """Greedy, longest first: checksum-valid [first, last+1) windows in a segment."""
        found = []
        i, end = segment
        while i + _VALID_LENGTHS[-1] <= end:
            for length in _VALID_LENGTHS:
                if i + length <= end and _phrase_like(self._indices(wordlist, i, i + length)):
                    found.append((i, i + length))
                    i += length
                    break
            else:
                i += 1
        return found

    def _tight_han_spans(self, wordlist: _WordList, group: _Segments) -> Iterator[_Span]:
        # Every accepted window is redacted, overlapping ones as their union: picking one
        # of two overlapping windows could leave a real phrase's first or last word behind.
        covered: list[tuple[int, int]] = []
        for segment in group:
            run_start = segment[0]
            for i in range(segment[0] + 1, segment[1] + 1):
                if i == segment[1] or self._separated(i):
                    covered.extend(self._tight_windows(wordlist, run_start, i))
                    run_start = i
        covered.sort()
        merged: list[list[int]] = []
        for first, last in covered:
            if merged and first < merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], last)
            else:
                merged.append([first, last])
        for first, last in merged:
            yield _Span(self.tokens[first].start, self.tokens[last - 1].end, "seed_phrase")

    def _tight_windows(
        self, wordlist: _WordList, run_first: int, run_last: int
    ) -> Iterator[tuple[int, int]]:
        if run_last - run_first < _VALID_LENGTHS[-1]:
            return
        indices = self._indices(wordlist, run_first, run_last)
        rare_before, rank_before = [0], [0]
        for index in indices:
            rare_before.append(rare_before[-1] + (index >= _HAN_COMMON_RANK))
            rank_before.append(rank_before[-1] + index)
        run_apart_left = not _is_han_at(self.text, self.tokens[run_first].start - 1)
        run_apart_right = not _is_han_at(self.text, self.tokens[run_last - 1].end)
        for i in range(len(indices)):
            for length in _VALID_LENGTHS:
                j = i + length
                if j > len(indices):
                    continue
                if rare_before[j] - rare_before[i] < _HAN_RARE_SHARE * length:
                    continue
                if rank_before[j] - rank_before[i] < _HAN_MIN_MEAN_RANK * length:
                    continue
                apart = i == 0 and run_apart_left and j == len(indices) and run_apart_right
                first, last = run_first + i, run_first + j
                if not apart and not self.follows_cue(self.tokens[first].start):
                    continue
                if _phrase_like(indices[i:j]):
                    yield first, last

    def _numbered(self, first: int, last: int) -> bool:
        numbers = []
        for i in range(first, last):
            found = _NUMBER_BEFORE.search(self.gap_before(i))
            if found:
                numbers.append(int(found.group(1)))
        increasing = all(a < b for a, b in itertools.pairwise(numbers))
        return len(numbers) >= _MIN_NEAR_MISS_WORDS and increasing

    def _near_misses(self, bit: int, first: int, last: int) -> Iterator[tuple[int, int, bool]]:
        """Phrase-shaped [first, last+1) ranges of a run that failed the checksum."""
        numbered = self._numbered(first, last)
        if numbered or self._one_per_line(first, last):
            pieces = [(first, last)]
        else:
            # Without numbering or one word per line, each line stands on its own:
            # "Hello,\n<phrase>\nplease check" must not take the greeting along.
            starts = [i for i in range(first + 1, last) if "\n" in self.gap_before(i)]
            bounds = [first, *starts, last]
            pieces = list(itertools.pairwise(bounds))
        flag = 1 << bit
        for piece_first, piece_last in pieces:
            words = [t.norm for t in self.tokens[piece_first:piece_last] if t.mask & flag]
            if len(words) < _MIN_NEAR_MISS_WORDS or len(set(words)) < len(words) - _MAX_REPEATS:
                continue
            start, end = self.tokens[piece_first].start, self.tokens[piece_last - 1].end
            if (
                (len(pieces) == 1 and (numbered or self._one_per_line(first, last)))
                or self.cue_before(start, end)
                or self._alone_on_line(start, end)
            ):
                yield piece_first, piece_last, numbered

    def _one_per_line(self, first: int, last: int) -> bool:
        breaks = sum(1 for i in range(first + 1, last) if "\n" in self.gap_before(i))
        return breaks >= (last - first) - 2

    def _alone_on_line(self, start: int, end: int) -> bool:
        """Nothing but a lead-in ending in a colon before it, no words or full stop after."""
        line_start = self.text.rfind("\n", 0, start) + 1
        line_end = self.text.find("\n", end)
        before = self.text[line_start:start]
        after = self.text[end : len(self.text) if line_end < 0 else line_end]
        lead_in_ok = not any(c.isalpha() for c in before) or before.rstrip().endswith((":", "："))
        tail_ok = not any(c.isalpha() for c in after) and not _SENTENCE_END.search(after)
        return lead_in_ok and tail_ok


def _is_han_at(text: str, position: int) -> bool:
    return 0 <= position < len(text) and _HAN_CHAR.match(text, position) is not None


def _seed_phrase_spans(text: str) -> Iterator[_Span]:
    tokens = _tokenize(text)
    if len(tokens) < _MIN_NEAR_MISS_WORDS:
        return iter(())
    return _SeedScan(text, tokens).spans()


# --- passwords and one-time codes -----------------------------------------------------

# Words that describe a password rather than being one ("password: reset", "Password is
# Wrong"); capitalised or after a colon they would otherwise pass as values.
_NOT_A_PASSWORD = frozenset(
    {
        "a", "an", "the", "my", "your", "this", "that", "it", "same", "also", "still",
        "not", "no", "yes", "ok", "okay", "none", "unknown", "done", "correct",
        "incorrect", "wrong", "invalid", "expired", "reset", "changed", "forgot",
        "forgotten", "lost", "locked", "blocked", "hacked", "stolen", "compromised",
        "leaked", "required", "missing", "empty", "weak", "strong",
    }
)  # fmt: skip
_EN_PASSWORD = re.compile(
    r"\b(?:pass(?:word|wd|code|phrase)?|pwd|pw|pin)\b"
    r"(?:(?P<strong>[ \t]*[:=：][ \t]*)|(?P<weak>\s+(?:is|was)\s*[:：]?\s+))"
    r"(?P<value>[\"'“‘«][^\"'”’»\n\x00]{1,128}[\"'”’»]|[^\s\x00]{1,128})",
    re.IGNORECASE,
)
_ZH_PASSWORD = re.compile(
    r"(?:密码|密碼|口令|pin码|PIN码)\s*(?:是|为|為|[:：=])\s*(?P<value>[!-~]{1,128})",
    re.IGNORECASE,
)
_TRAILING_PUNCTUATION = ".,;:。，；：!?！？)）]】"

_OTP_CUE = (
    r"(?:\b2fa\b|\bmfa\b|two[- ]?factor|\botp\b|one[- ]time(?:\s+(?:pass(?:word|code)?|pin))?|"
    r"google\s+auth(?:enticator)?|\bauthenticator\b|\bga\b|"
    r"\b(?:verification|security|sms|email|auth|confirmation|login|2fa|otp|ga)\s+code|"
    r"验证码|驗證碼|谷歌验证器?|谷歌驗證器?|动态码|動態碼|校验码|校驗碼|二次验证|两步验证|"
    r"安全码|确认码|確認碼)"
)
_OTP_FILLER = (
    r"(?:\s*(?:my|the|current|new|latest|app|from|code|codes|pin|token|number|is|was|are|"
    r"now|[:：=#-]|是|为|為|码|碼|的|号码)){0,4}"
)
_OTP_VALUE = r"(?P<value>(?<!\d)(?:\d{3}[ -]\d{3}|\d{4,8})(?!\d))"
_OTP = re.compile(_OTP_CUE + _OTP_FILLER + r"\s*" + _OTP_VALUE, re.IGNORECASE)
_OTP_REVERSED = re.compile(
    r"(?P<value>(?<!\d)\d{6}(?!\d))\s*(?:is|was|是)\s*(?:my|the|我的)?\s*" + _OTP_CUE,
    re.IGNORECASE,
)


def _password_spans(text: str) -> Iterator[_Span]:
    lowered = text.lower()
    if "pass" in lowered or "pw" in lowered or "pin" in lowered:
        for match in _EN_PASSWORD.finditer(text):
            span = _value_span(match, weak=match.group("weak") is not None)
            if span is not None:
                yield span
    if "密" in text or "口令" in text or "码" in text:
        for match in _ZH_PASSWORD.finditer(text):
            span = _value_span(match, weak=False)
            if span is not None:
                yield span


def _value_span(match: re.Match[str], *, weak: bool) -> _Span | None:
    value = match.group("value")
    start = match.start("value")
    if value[0] in "\"'“‘«":
        return _Span(start, match.end("value"), "password")
    trimmed = value.rstrip(_TRAILING_PUNCTUATION)
    if not trimmed:
        return None
    lowered = trimmed.lower()
    if lowered in _NOT_A_PASSWORD:
        return None
    # Exchanges require mixed character classes, so after "is" a word of plain letters
    # is a description ("is tiresome"), not the password.
    if weak and trimmed.isalpha() and (trimmed[1:].islower() or len(trimmed) == 1):
        return None
    return _Span(start, start + len(trimmed), "password")


def _otp_spans(text: str) -> Iterator[_Span]:
    for pattern in (_OTP, _OTP_REVERSED):
        for match in pattern.finditer(text):
            yield _Span(match.start("value"), match.end("value"), "otp_code")
