"""Building and scoring the classifier: corpus in, `TextModel` and an evaluation out.

The corpus is data in the repo (data/classify/corpus/*.jsonl, one labelled example per
line); agents' corrections come from ingest's store. The held-out split is stratified by
(category, language) and chosen by a digest of each text, so it is the same on every run
and an example never moves between the two sides when others are added: training never
sees the held-out examples, today or after the corpus grows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import sklearn
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from scipy.optimize import minimize_scalar
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from services.ingest.classify import ClassifyPolicy, check_model, decide
from services.ingest.textmodel import (
    TextModel,
    load_model,
    make_vectorizer,
    save_model,
    softmax,
)
from shared.contracts.common import CATEGORIES, Category

log = logging.getLogger(__name__)

# How an example is written (data/classify/README.md); "correction": an agent's.
Register = Literal[
    "chat",
    "email",
    "voice",
    "social",
    "howto",
    "negation",
    "followup",
    "mixed",
    "traditional",
    "correction",
]


class CorpusError(ValueError):
    """A corpus line that is not a valid example (file and line named)."""


class Example(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    text: str = Field(min_length=1, max_length=20_000)
    language: Literal["en", "zh"]
    category: Category
    style: Register = Field(alias="register", description="How it is written")

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def default_corpus_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "data" / "classify" / "corpus"


def default_model_path() -> Path:
    return Path(__file__).resolve().parents[2] / "data" / "classify" / "model.npz"


def load_corpus(directory: Path) -> list[Example]:
    """Every example of every `*.jsonl` file, in file then line order; duplicates dropped."""
    files = sorted(directory.glob("*.jsonl"))
    if not files:
        raise CorpusError(f"{directory}: no *.jsonl corpus files")
    seen: set[str] = set()
    out: list[Example] = []
    for path in files:
        for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                example = Example.model_validate_json(line)
            except ValidationError as exc:
                raise CorpusError(f"{path.name}:{number}: {exc.errors()[0]['msg']}") from exc
            if example.text not in seen:
                seen.add(example.text)
                out.append(example)
    return out


def digest_of(examples: Iterable[Example]) -> str:
    h = hashlib.sha256()
    for e in examples:
        data = e.model_dump(by_alias=True)
        h.update(json.dumps(data, sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def split(examples: Sequence[Example], held_out: float) -> tuple[list[Example], list[Example]]:
    """(train, held out): per (category, language), the `held_out` share with the lowest digests."""
    strata: dict[tuple[str, str], list[Example]] = defaultdict(list)
    for e in examples:
        strata[(e.category, e.language)].append(e)
    chosen: set[str] = set()
    for members in strata.values():
        if len(members) < 2:
            continue
        count = max(1, math.ceil(len(members) * held_out))
        chosen.update(e.digest for e in sorted(members, key=lambda e: e.digest)[:count])
    train = [e for e in examples if e.digest not in chosen]
    test = [e for e in examples if e.digest in chosen]
    return train, test


@dataclass(frozen=True)
class Evaluation:
    """Scores of the production decision (model, safety threshold, hard rules) on examples."""

    total: int
    correct: int
    raw_correct: int  # the model's top category alone, before the safety threshold
    confusion: dict[tuple[Category, Category], int]  # (true, decided) -> count
    urgent: tuple[Category, ...]
    priorities: dict[Category, str] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    @property
    def raw_accuracy(self) -> float:
        return self.raw_correct / self.total if self.total else 0.0

    def support(self, category: Category) -> int:
        return sum(n for (t, _), n in self.confusion.items() if t == category)

    def recall(self, category: Category) -> float:
        support = self.support(category)
        hit = self.confusion.get((category, category), 0)
        return hit / support if support else 1.0

    def precision(self, category: Category) -> float:
        decided = sum(n for (_, d), n in self.confusion.items() if d == category)
        hit = self.confusion.get((category, category), 0)
        return hit / decided if decided else 1.0

    def routed_urgent(self, category: Category) -> float:
        """Share of `category`'s examples decided as some urgent category (routed P1)."""
        support = self.support(category)
        urgent = set(self.urgent)
        hit = sum(n for (t, d), n in self.confusion.items() if t == category and d in urgent)
        return hit / support if support else 1.0

    @property
    def urgent_recall(self) -> float:
        """Share of urgent (P1) examples decided as some urgent category: routed P1."""
        support = sum(n for (t, _), n in self.confusion.items() if t in self.urgent)
        urgent = set(self.urgent)
        hit = sum(n for (t, d), n in self.confusion.items() if t in urgent and d in urgent)
        return hit / support if support else 1.0

    @property
    def urgent_demoted(self) -> int:
        """Urgent examples decided as a P3 or P4 category (the failure that costs most)."""
        low = {c for c, p in self.priorities.items() if p in ("P3", "P4")}
        return sum(n for (t, d), n in self.confusion.items() if t in self.urgent and d in low)

    def to_dict(self) -> dict[str, object]:
        return {
            "examples": self.total,
            "accuracy": round(self.accuracy, 4),
            "model_top_accuracy": round(self.raw_accuracy, 4),
            "urgent_recall": round(self.urgent_recall, 4),
            "urgent_demoted": self.urgent_demoted,
            "recall": {c: round(self.recall(c), 4) for c in CATEGORIES},
            "precision": {c: round(self.precision(c), 4) for c in CATEGORIES},
        }


# The priority each category routes at by default (policy/routing.yaml); evaluation
# reports a P1 example decided as P3/P4 separately. Ingest does not read the router's
# policy: this table only labels the report.
REPORT_PRIORITIES: dict[Category, str] = {
    "stolen_funds": "P1",
    "account_takeover": "P1",
    "secret_exposed": "P1",
    "withdrawal": "P2",
    "deposit": "P2",
    "login_2fa": "P3",
    "kyc": "P3",
    "scam_report": "P3",
    "trading": "P4",
    "general": "P4",
}


def evaluate(model: TextModel, examples: Sequence[Example], policy: ClassifyPolicy) -> Evaluation:
    probabilities = model.probabilities([e.text for e in examples])
    confusion: Counter[tuple[Category, Category]] = Counter()
    correct = raw = 0
    for example, row in zip(examples, probabilities, strict=True):
        decision = decide(row, model.categories, policy, text=example.text)
        confusion[(example.category, decision.category)] += 1
        correct += decision.category == example.category
        raw += model.categories[int(np.argmax(row))] == example.category
    return Evaluation(
        total=len(examples),
        correct=correct,
        raw_correct=raw,
        confusion=dict(confusion),
        urgent=policy.urgent.categories,
        priorities=dict(REPORT_PRIORITIES),
    )


def fit(examples: Sequence[Example], policy: ClassifyPolicy) -> TextModel:
    """A model trained on `examples` (deterministic: fixed seed, fixed order)."""
    settings = policy.model
    texts = [e.text for e in examples]
    labels = np.array([CATEGORIES.index(e.category) for e in examples])
    vectorizer = make_vectorizer(settings.ngram_range, settings.max_chars)
    features = vectorizer.fit_transform(texts)
    present = sorted(set(labels.tolist()))
    if len(present) != len(CATEGORIES):
        missing = [c for i, c in enumerate(CATEGORIES) if i not in present]
        raise CorpusError(f"no examples of {missing}")

    def linear() -> LogisticRegression:
        return LogisticRegression(C=settings.c, max_iter=2000, random_state=settings.seed)

    temperature = _fit_temperature(features, labels, linear, settings.seed)
    classifier = linear().fit(features, labels)
    vocabulary = [""] * len(vectorizer.vocabulary_)
    for gram, index in vectorizer.vocabulary_.items():
        vocabulary[index] = gram
    return TextModel(
        categories=CATEGORIES,
        vocabulary=tuple(vocabulary),
        idf=vectorizer.idf_.astype(np.float32),
        coef=classifier.coef_.astype(np.float32),
        intercept=classifier.intercept_.astype(np.float32),
        meta={
            "ngram_range": list(settings.ngram_range),
            "max_chars": settings.max_chars,
            "temperature": temperature,
            "c": settings.c,
            "seed": settings.seed,
            "trained_examples": len(examples),
            "sklearn": sklearn.__version__,
        },
    )


def _fit_temperature(
    features: object, labels: NDArray[np.int_], linear: object, seed: int
) -> float:
    """Temperature that makes cross-validated probabilities honest (lowest log loss)."""
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    scores = np.zeros((len(labels), len(CATEGORIES)))
    for train, test in folds.split(np.zeros(len(labels)), labels):
        model = linear().fit(features[train], labels[train])  # type: ignore[index,operator]
        scores[test] = model.decision_function(features[test])  # type: ignore[index]

    def loss(t: float) -> float:
        p = softmax(scores / t)
        return float(-np.mean(np.log(p[np.arange(len(labels)), labels] + 1e-12)))

    result = minimize_scalar(loss, bounds=(0.05, 20.0), method="bounded")
    return round(float(result.x), 4)


@dataclass(frozen=True)
class Trained:
    model: TextModel
    held_out: Evaluation
    train_count: int


def train(
    corpus: Sequence[Example], policy: ClassifyPolicy, corrections: Sequence[Example] = ()
) -> Trained:
    """Fit on the training side of the split (corrections included), score the held-out side."""
    train_side, held_out = split(corpus, policy.model.held_out)
    # Corrections go to training; their texts are never in the held-out split.
    held = {e.text for e in held_out}
    extra = [e for e in corrections if e.text not in held]
    model = fit([*train_side, *extra], policy)
    evaluation = evaluate(model, held_out, policy)
    meta = {
        **model.meta,
        "corpus_digest": digest_of(corpus),
        "corrections": len(extra),
        "held_out": evaluation.to_dict(),
    }
    return Trained(
        model=replace(model, meta=meta),
        held_out=evaluation,
        train_count=len(train_side) + len(extra),
    )


def report(evaluation: Evaluation, title: str) -> str:
    """Markdown: the headline figures, per-category precision/recall, the confusion matrix."""
    short = {c: c.replace("_", " ")[:10] for c in CATEGORIES}
    lines = [
        f"### {title}",
        "",
        f"- examples: {evaluation.total}",
        f"- accuracy: {evaluation.accuracy:.1%} (model's top category alone: "
        f"{evaluation.raw_accuracy:.1%})",
        f"- P1 recall (urgent examples routed P1): {evaluation.urgent_recall:.1%}",
        f"- P1 examples decided P3/P4: {evaluation.urgent_demoted}",
        "",
        "| category | priority | support | precision | recall | routed P1 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for c in CATEGORIES:
        p1 = f"{evaluation.routed_urgent(c):.1%}" if c in evaluation.urgent else ""
        lines.append(
            f"| {c} | {REPORT_PRIORITIES[c]} | {evaluation.support(c)} | "
            f"{evaluation.precision(c):.1%} | {evaluation.recall(c):.1%} | {p1} |"
        )
    lines += [
        "",
        "Confusion matrix (rows: true category, columns: decided):",
        "",
        "| true \\ decided | " + " | ".join(short[c] for c in CATEGORIES) + " |",
        "|---" * (len(CATEGORIES) + 1) + "|",
    ]
    for t in CATEGORIES:
        cells = [str(evaluation.confusion.get((t, d), 0) or ".") for d in CATEGORIES]
        lines.append(f"| {short[t]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load_or_train(model_path: Path, corpus_dir: Path, policy: ClassifyPolicy) -> TextModel:
    """The model at `model_path`, or one trained from the corpus (and saved there if it can).

    Raises `ModelError` or `RulesError` for a model the policy refuses: unreadable,
    pickled, missing a category, or below `min_accuracy` on its held-out split.
    """
    if model_path.exists():
        model = load_model(model_path)
        if corpus_dir.is_dir() and model.meta.get("corpus_digest") != digest_of(
            load_corpus(corpus_dir)
        ):
            log.warning(
                "classifier model was built from another corpus: run `omniroute classify train`",
                extra={"model": str(model_path)},
            )
    else:
        log.info("no classifier model: training from the corpus", extra={"model": str(model_path)})
        model = train(load_corpus(corpus_dir), policy).model
        try:
            save_model(model, model_path)
        except OSError:
            log.warning("could not save the trained model", extra={"model": str(model_path)})
    check_model(model, policy)
    return model


def corrections_of(documents: Iterable[dict[str, object]]) -> list[Example]:
    """Training examples from agents' corrections (ingest's `training_examples`)."""
    out = []
    for d in documents:
        try:
            out.append(
                Example(
                    text=str(d["text"]),
                    language="zh" if d.get("language") == "zh" else "en",
                    category=d["category"],  # type: ignore[arg-type]
                    style="correction",
                )
            )
        except (KeyError, ValidationError):
            continue  # a correction that is no longer a valid example is left out
    return out
