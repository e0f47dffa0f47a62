"""The learned text classifier: character n-gram TF-IDF into a linear model, as plain arrays.

A model file is a NumPy `.npz` archive read with `allow_pickle=False`, so loading one
runs no code (a pickle would). It holds:

    vocabulary      str[n_features]             character n-grams, index = feature number
    idf             float32[n_features]         inverse document frequencies
    coef            float32[n_classes, n_feat]  the linear model's weights
    intercept       float32[n_classes]
    categories      str[n_classes]              class order of coef's rows
    meta            str[1]                      JSON: n-gram range, temperature, held-out
                                                scores, corpus digest, library versions

Probabilities are the linear model's softmax at a temperature fitted on cross-validated
scores (temperature scaling), so "p=0.41" means about 41 % of such messages really are
that category.

Text is normalised the same way for training and prediction (`normalise`): redaction
markers removed, Traditional Chinese folded to Simplified (one set of features for
帳號 and 帐号), lower case, white space collapsed, and cut to `max_chars`.
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
from numpy.typing import NDArray
from sklearn.feature_extraction.text import TfidfVectorizer

from services.ingest.redact import MARKER_PATTERN
from shared.contracts.common import CATEGORIES, Category

FORMAT = "omniroute-textmodel/1"
_HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_SPACE = re.compile(r"\s+")


class ModelError(ValueError):
    """A model file that is missing, not ours, pickled, or inconsistent."""


@functools.cache
def _t2s() -> opencc.OpenCC:
    return opencc.OpenCC("t2s")


def normalise(text: str, max_chars: int) -> str:
    """What the model reads of a message (the same in training and in prediction)."""
    text = MARKER_PATTERN.sub(" ", text[: max_chars * 2])
    text = unicodedata.normalize("NFKC", text)
    if _HAN.search(text):
        text = _t2s().convert(text)
    return _SPACE.sub(" ", text.lower()).strip()[:max_chars]


def make_vectorizer(ngram_range: tuple[int, int], max_chars: int) -> TfidfVectorizer:
    return TfidfVectorizer(
        analyzer="char_wb",
        ngram_range=ngram_range,
        lowercase=False,
        preprocessor=functools.partial(normalise, max_chars=max_chars),
        sublinear_tf=True,
        min_df=2,
        dtype=np.float32,
    )


@dataclass(frozen=True)
class TextModel:
    categories: tuple[Category, ...]
    vocabulary: tuple[str, ...]
    idf: NDArray[np.float32]
    coef: NDArray[np.float32]
    intercept: NDArray[np.float32]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ngram_range(self) -> tuple[int, int]:
        low, high = self.meta.get("ngram_range", (1, 4))
        return int(low), int(high)

    @property
    def max_chars(self) -> int:
        return int(self.meta.get("max_chars", 2000))

    @property
    def temperature(self) -> float:
        return float(self.meta.get("temperature", 1.0))

    @functools.cached_property
    def _vectorizer(self) -> TfidfVectorizer:
        vectorizer = make_vectorizer(self.ngram_range, self.max_chars)
        vectorizer.set_params(vocabulary={gram: i for i, gram in enumerate(self.vocabulary)})
        vectorizer.idf_ = self.idf
        return vectorizer

    @functools.cached_property
    def _weights(self) -> NDArray[np.float32]:
        # Features by classes: one sparse-by-dense product scores a whole batch.
        return np.ascontiguousarray(self.coef.T)

    def probabilities(self, texts: Sequence[str]) -> NDArray[np.float64]:
        """One row per text, one column per category (in `categories` order), rows sum to 1."""
        if not texts:
            return np.zeros((0, len(self.categories)))
        features = self._vectorizer.transform(texts)
        scores = np.asarray(features @ self._weights, dtype=np.float64) + self.intercept
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
            coef=model.coef.astype(np.float32),
            intercept=model.intercept.astype(np.float32),
            categories=np.array(model.categories, dtype=np.str_),
            meta=np.array([json.dumps(meta, sort_keys=True)], dtype=np.str_),
        )


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
    missing = {"vocabulary", "idf", "coef", "intercept", "categories", "meta"} - set(arrays)
    if missing:
        raise ModelError(f"{path}: missing arrays {sorted(missing)}")
    try:
        meta = json.loads(str(arrays["meta"][0]))
    except (ValueError, IndexError) as exc:
        raise ModelError(f"{path}: unreadable meta") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{path}: unknown format {meta.get('format') if meta else None!r}")
    categories = tuple(str(c) for c in arrays["categories"])
    unknown = set(categories) - set(CATEGORIES)
    if unknown or len(set(categories)) != len(categories):
        raise ModelError(f"{path}: unknown or repeated categories {sorted(unknown)}")
    vocabulary = tuple(str(v) for v in arrays["vocabulary"])
    coef, idf, intercept = arrays["coef"], arrays["idf"], arrays["intercept"]
    if (
        coef.shape != (len(categories), len(vocabulary))
        or idf.shape != (len(vocabulary),)
        or intercept.shape != (len(categories),)
    ):
        raise ModelError(f"{path}: array shapes do not agree")
    if not (np.isfinite(coef).all() and np.isfinite(idf).all() and np.isfinite(intercept).all()):
        raise ModelError(f"{path}: non-finite weights")
    return TextModel(
        categories=categories,  # type: ignore[arg-type]
        vocabulary=vocabulary,
        idf=idf.astype(np.float32),
        coef=coef.astype(np.float32),
        intercept=intercept.astype(np.float32),
        meta=meta,
    )
