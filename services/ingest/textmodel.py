"""The learned text classifier: n-gram TF-IDF into a linear model, as plain arrays.

A message is read three ways, side by side in one feature vector:

- character n-grams (1–4, inside words): Chinese needs no segmentation, typos keep most of
  their n-grams;
- word uni/bigrams ("wasn't me", "from omni to"): the order and direction character
  n-grams inside words cannot see; a run of Chinese characters is read as its character
  bigrams ("没收到" → "没收 收到"), so the word view reads Chinese too; the three words
  (English) or bigrams (Chinese) after a negation are marked as negated ("not hacked" is
  not "hacked", "不是我" → "不是 neg_是我");
- the kinds of secret redaction removed ("[REDACTED:otp_code]" → one feature per kind):
  the model sees that a code or password was pasted, never the secret.

A model file is a NumPy `.npz` archive read with `allow_pickle=False`, so loading one
runs no code (a pickle would). It holds:

    vocabulary      str[n_char]                 character n-grams, index = feature number
    idf             float32[n_char]             their inverse document frequencies
    word_vocabulary str[n_word]                 word uni/bigrams, numbered after the n-grams
    word_idf        float32[n_word]
    coef            float32[n_classes, n_feat]  weights: char n-grams, words, then one per
                                                redaction kind (`REDACTION_KINDS` order)
    intercept       float32[n_classes]
    categories      str[n_classes]              class order of coef's rows
    meta            str[1]                      JSON: n-gram ranges, temperature, held-out
                                                scores, corpus digest, library versions

The linear model is two linear models stacked, folded into one weight matrix: a one-vs-rest
SVM and a ridge classifier score the ten categories, and a multinomial logistic
regression, fitted on their cross-validated scores, turns the twenty scores into
probabilities. Every step is linear, so the product of the three is `coef` and `intercept`,
and prediction is one sparse-by-dense product and a softmax (at `temperature`, 1 for a
stacked model). The stacker learns from the scores which categories each model confuses
(a deposit's score against a withdrawal's) and calibrates them, so "p=0.41" means about
41 % of such messages really are that category.

Text is normalised the same way for training and prediction (`normalise`): redaction
markers removed (their kinds are features of their own), Traditional Chinese folded to
Simplified (one set of features for 帳號 and 帐号), lower case, white space collapsed,
and cut to `max_chars`.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import opencc
import scipy.sparse as sp
from numpy.typing import NDArray
from sklearn.feature_extraction.text import TfidfVectorizer

from services.ingest.redact import MARKER_PATTERN, MARKERS, RedactionKind
from shared.contracts.common import CATEGORIES, Category

FORMAT = "omniroute-textmodel/3"
# One feature per kind of secret redaction removed, after the n-gram and word features.
REDACTION_KINDS: tuple[RedactionKind, ...] = ("seed_phrase", "private_key", "password", "otp_code")
_HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_HAN_RUN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+")
_SPACE = re.compile(r"\s+")
_WORD = r"(?u)\b\w+\b"
# English negations: the words after one are read as negated ("not hacked" → "not
# neg_hacked"), so "hacked" and "not hacked" are different features of the word view.
_NEGATION = re.compile(
    r"(?:not|no|never|nobody|nothing|without|"
    r"(?:didn|don|doesn|wasn|isn|aren|weren|haven|hasn|hadn|can|couldn|won|wouldn)['’]?t|cannot)\W*"
)
NEGATION_SCOPE = 3
# Chinese negations: a bigram starting with one of these negates the next bigrams
# ("没收到" → "没收 neg_收到"), except words where the character does not negate.
_ZH_NEGATIONS = frozenset("不没未别无非")
_ZH_NOT_NEGATIONS = frozenset({"别人", "别的", "非常", "无论", "未来"})
ZH_NEGATION_SCOPE = 3


class ModelError(ValueError):
    """A model file that is missing, not ours, pickled, or inconsistent."""


class OutdatedModelError(ModelError):
    """A plain-array model file of an older format: safe to replace by retraining."""


@functools.cache
def _t2s() -> opencc.OpenCC:
    return opencc.OpenCC("t2s")


def normalise(text: str, max_chars: int) -> str:
    """What the n-gram views read of a message (the same in training and in prediction)."""
    text = MARKER_PATTERN.sub(" ", text[: max_chars * 2])
    text = unicodedata.normalize("NFKC", text)
    if _HAN.search(text):
        text = _t2s().convert(text)
    return _SPACE.sub(" ", text.lower()).strip()[:max_chars]


def mark_negation(normalised: str) -> str:
    """The word view's text: the `NEGATION_SCOPE` words after an English negation prefixed."""
    out: list[str] = []
    scope = 0
    for word in normalised.split(" "):
        out.append(f"neg_{word}" if scope else word)
        scope = NEGATION_SCOPE if _NEGATION.fullmatch(word) else max(0, scope - 1)
    return " ".join(out)


def _chinese_bigrams(run: str) -> str:
    bigrams = [run[i : i + 2] for i in range(max(1, len(run) - 1))]
    out: list[str] = []
    scope = 0
    for bigram in bigrams:
        out.append(f"neg_{bigram}" if scope else bigram)
        negates = bigram[0] in _ZH_NEGATIONS and bigram not in _ZH_NOT_NEGATIONS
        scope = ZH_NEGATION_SCOPE if negates else max(0, scope - 1)
    return f" {' '.join(out)} "


def word_text(normalised: str) -> str:
    """The word view's text: English negation marked, Chinese runs read as marked bigrams."""
    marked = mark_negation(normalised)
    if not _HAN.search(marked):
        return marked
    return _SPACE.sub(" ", _HAN_RUN.sub(lambda m: _chinese_bigrams(m.group(0)), marked)).strip()


def make_vectorizer(ngram_range: tuple[int, int]) -> TfidfVectorizer:
    """Character n-grams inside words, of already normalised text."""
    return TfidfVectorizer(
        analyzer="char_wb",
        ngram_range=ngram_range,
        lowercase=False,
        sublinear_tf=True,
        min_df=2,
        dtype=np.float32,
    )


def make_word_vectorizer(ngram_range: tuple[int, int]) -> TfidfVectorizer:
    """Word n-grams of a `word_text` (a Chinese character bigram is one word)."""
    return TfidfVectorizer(
        analyzer="word",
        ngram_range=ngram_range,
        lowercase=False,
        token_pattern=_WORD,
        sublinear_tf=True,
        min_df=2,
        dtype=np.float32,
    )


def redaction_features(texts: Sequence[str]) -> sp.csr_matrix:
    """One column per redaction kind: 1 when the text holds that kind's marker."""
    rows = [[1.0 if MARKERS[kind] in text else 0.0 for kind in REDACTION_KINDS] for text in texts]
    return sp.csr_matrix(np.array(rows, dtype=np.float32).reshape(len(texts), len(REDACTION_KINDS)))


def features(
    texts: Sequence[str], chars: TfidfVectorizer, words: TfidfVectorizer, max_chars: int
) -> sp.csr_matrix:
    """The model's input: character n-grams, words and redaction kinds, side by side."""
    normalised = [normalise(t, max_chars) for t in texts]
    return sp.hstack(
        [
            chars.transform(normalised),
            words.transform([word_text(t) for t in normalised]),
            redaction_features(texts),
        ],
        format="csr",
    )


def _fitted(
    vectorizer: TfidfVectorizer, vocabulary: Sequence[str], idf: NDArray[np.float32]
) -> TfidfVectorizer:
    vectorizer.set_params(vocabulary={gram: i for i, gram in enumerate(vocabulary)})
    vectorizer.idf_ = idf
    return vectorizer


@dataclass(frozen=True)
class TextModel:
    categories: tuple[Category, ...]
    vocabulary: tuple[str, ...]
    idf: NDArray[np.float32]
    word_vocabulary: tuple[str, ...]
    word_idf: NDArray[np.float32]
    coef: NDArray[np.float32]
    intercept: NDArray[np.float32]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ngram_range(self) -> tuple[int, int]:
        low, high = self.meta.get("ngram_range", (1, 4))
        return int(low), int(high)

    @property
    def word_ngram_range(self) -> tuple[int, int]:
        low, high = self.meta.get("word_ngram_range", (1, 2))
        return int(low), int(high)

    @property
    def max_chars(self) -> int:
        return int(self.meta.get("max_chars", 2000))

    @property
    def temperature(self) -> float:
        return float(self.meta.get("temperature", 1.0))

    @functools.cached_property
    def _vectorizers(self) -> tuple[TfidfVectorizer, TfidfVectorizer]:
        chars = _fitted(make_vectorizer(self.ngram_range), self.vocabulary, self.idf)
        words = _fitted(
            make_word_vectorizer(self.word_ngram_range), self.word_vocabulary, self.word_idf
        )
        return chars, words

    @functools.cached_property
    def _weights(self) -> NDArray[np.float32]:
        # Features by classes: one sparse-by-dense product scores a whole batch.
        return np.ascontiguousarray(self.coef.T)

    def probabilities(self, texts: Sequence[str]) -> NDArray[np.float64]:
        """One row per text, one column per category (in `categories` order), rows sum to 1."""
        if not texts:
            return np.zeros((0, len(self.categories)))
        chars, words = self._vectorizers
        x = features(texts, chars, words, self.max_chars)
        scores = np.asarray(x @ self._weights, dtype=np.float64) + self.intercept
        return softmax(scores / self.temperature)


def softmax(scores: NDArray[np.float64]) -> NDArray[np.float64]:
    shifted = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    out: NDArray[np.float64] = exp / exp.sum(axis=1, keepdims=True)
    return out


def save_model(model: TextModel, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, **model.meta}
    with path.open("wb") as out:
        np.savez_compressed(
            out,
            vocabulary=np.array(model.vocabulary, dtype=np.str_),
            idf=model.idf.astype(np.float32),
            word_vocabulary=np.array(model.word_vocabulary, dtype=np.str_),
            word_idf=model.word_idf.astype(np.float32),
            coef=model.coef.astype(np.float32),
            intercept=model.intercept.astype(np.float32),
            categories=np.array(model.categories, dtype=np.str_),
            meta=np.array([json.dumps(meta, sort_keys=True)], dtype=np.str_),
        )


_ARRAYS = {"vocabulary", "idf", "word_vocabulary", "word_idf", "coef", "intercept", "categories"}


def load_model(path: Path) -> TextModel:
    """Read a model file; anything but our plain-array archive raises `ModelError`."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise ModelError(f"{path}: {exc.strerror or exc}") from exc
    if head[:1] == b"\x80" or not zipfile.is_zipfile(path):
        # A pickle starts with its protocol opcode (0x80); loading one runs code.
        raise ModelError(f"{path}: not a plain-array model archive (pickle files are refused)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ModelError(f"{path}: {exc}") from exc
    if "meta" not in arrays:
        raise ModelError(f"{path}: missing arrays ['meta']")
    try:
        meta = json.loads(str(arrays["meta"][0]))
    except (ValueError, IndexError) as exc:
        raise ModelError(f"{path}: unreadable meta") from exc
    found = meta.get("format") if isinstance(meta, dict) else None
    if isinstance(found, str) and found.startswith("omniroute-textmodel/") and found != FORMAT:
        raise OutdatedModelError(
            f"{path}: format {found!r}, this version reads {FORMAT!r}: "
            "rebuild it with `omniroute classify train`"
        )
    if not isinstance(meta, dict) or found != FORMAT:
        raise ModelError(
            f"{path}: format {found!r}, this version reads {FORMAT!r}: "
            "rebuild it with `omniroute classify train`"
        )
    missing = _ARRAYS - set(arrays)
    if missing:
        raise ModelError(f"{path}: missing arrays {sorted(missing)}")
    categories = tuple(str(c) for c in arrays["categories"])
    unknown = set(categories) - set(CATEGORIES)
    if unknown or len(set(categories)) != len(categories):
        raise ModelError(f"{path}: unknown or repeated categories {sorted(unknown)}")
    vocabulary = tuple(str(v) for v in arrays["vocabulary"])
    word_vocabulary = tuple(str(v) for v in arrays["word_vocabulary"])
    coef, idf, intercept = arrays["coef"], arrays["idf"], arrays["intercept"]
    word_idf = arrays["word_idf"]
    width = len(vocabulary) + len(word_vocabulary) + len(REDACTION_KINDS)
    if (
        coef.shape != (len(categories), width)
        or idf.shape != (len(vocabulary),)
        or word_idf.shape != (len(word_vocabulary),)
        or intercept.shape != (len(categories),)
    ):
        raise ModelError(f"{path}: array shapes do not agree")
    if not all(np.isfinite(a).all() for a in (coef, idf, word_idf, intercept)):
        raise ModelError(f"{path}: non-finite weights")
    return TextModel(
        categories=categories,  # type: ignore[arg-type]
        vocabulary=vocabulary,
        idf=idf.astype(np.float32),
        word_vocabulary=word_vocabulary,
        word_idf=word_idf.astype(np.float32),
        coef=coef.astype(np.float32),
        intercept=intercept.astype(np.float32),
        meta=meta,
    )
