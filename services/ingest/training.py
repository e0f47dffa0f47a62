"""Building and scoring the classifier: corpus in, `TextModel` and an evaluation out.

The corpus is data in the repo (data/classify/corpus/*.jsonl, one labelled example per
line); agents' corrections come from ingest's store. The held-out split is stratified by
(category, language) and chosen by a digest of each text, so it is the same on every run
and an example never moves between the two sides when others are added: training never
sees the held-out examples, today or after the corpus grows.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp
import sklearn
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC

from services.ingest.classify import ClassifyPolicy, ModelSettings, check_model, decide
from services.ingest.redact import MARKERS
from services.ingest.textmodel import (
    OutdatedModelError,
    TextModel,
    features,
    load_model,
    make_vectorizer,
    make_word_vectorizer,
    normalise,
    save_model,
    word_text,
)
from shared.contracts.common import CATEGORIES, Category
from shared.contracts.messages import Redaction

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
    """Scores of the production decision (model, safety threshold, hard rules) on examples.

    The category decided is what accuracy and the confusion matrix count; whether the
    message is routed as urgent (P1) — by its category or by a possible urgent one — is
    what the P1 figures count.
    """

    total: int
    correct: int
    raw_correct: int  # the model's top category alone, before the hard rules and the hint
    confusion: dict[tuple[Category, Category], int]  # (true, decided) -> count
    urgent: tuple[Category, ...]
    routed: dict[Category, int] = field(default_factory=dict)  # true -> routed urgent
    demoted: int = 0  # urgent examples routed as a P3 or P4 category

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
        """Share of `category`'s examples routed as urgent (P1)."""
        support = self.support(category)
        return self.routed.get(category, 0) / support if support else 1.0

    @property
    def urgent_recall(self) -> float:
        """Share of urgent (P1) examples routed P1."""
        support = sum(self.support(c) for c in self.urgent)
        hit = sum(self.routed.get(c, 0) for c in self.urgent)
        return hit / support if support else 1.0

    @property
    def urgent_demoted(self) -> int:
        """Urgent examples routed as a P3 or P4 category (the failure that costs most)."""
        return self.demoted

    @property
    def false_alarms(self) -> float:
        """Share of the other (non-P1) examples routed P1: what safety first costs."""
        others = [c for c in CATEGORIES if c not in self.urgent]
        support = sum(self.support(c) for c in others)
        hit = sum(self.routed.get(c, 0) for c in others)
        return hit / support if support else 0.0

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


def redactions_in(text: str) -> tuple[Redaction, ...]:
    """The redactions a text's markers stand for: what ingest's redaction reported for it."""
    return tuple(
        Redaction(kind=kind, count=text.count(marker))
        for kind, marker in MARKERS.items()
        if marker in text
    )


def evaluate(model: TextModel, examples: Sequence[Example], policy: ClassifyPolicy) -> Evaluation:
    """The production decision on each example, the redaction rule included (as in ingest)."""
    return evaluate_probabilities(
        model.probabilities([e.text for e in examples]), model.categories, examples, policy
    )


def evaluate_probabilities(
    probabilities: NDArray[np.float64],
    categories: Sequence[Category],
    examples: Sequence[Example],
    policy: ClassifyPolicy,
) -> Evaluation:
    confusion: Counter[tuple[Category, Category]] = Counter()
    routed: Counter[Category] = Counter()
    correct = raw = demoted = 0
    for example, row in zip(examples, probabilities, strict=True):
        decision = decide(
            row, categories, policy, text=example.text, redactions=redactions_in(example.text)
        )
        confusion[(example.category, decision.category)] += 1
        correct += decision.category == example.category
        raw += categories[int(np.argmax(row))] == example.category
        if decision.urgent(policy):
            routed[example.category] += 1
        elif example.category in policy.urgent.categories:
            demoted += REPORT_PRIORITIES[decision.category] in ("P3", "P4")
    return Evaluation(
        total=len(examples),
        correct=correct,
        raw_correct=raw,
        confusion=dict(confusion),
        urgent=policy.urgent.categories,
        routed=dict(routed),
        demoted=demoted,
    )


def fit(examples: Sequence[Example], policy: ClassifyPolicy) -> TextModel:
    """A model trained on `examples` (deterministic: fixed seed, fixed order)."""
    return fit_cross_validated(examples, policy)[0]


def fit_cross_validated(
    examples: Sequence[Example], policy: ClassifyPolicy
) -> tuple[TextModel, NDArray[np.float64]]:
    """The model, and each example's probabilities from a 5-fold cross-validation of `examples`.

    Two linear models score the categories: a one-vs-rest SVM and a ridge classifier. A
    multinomial logistic regression (the stacker) is fitted on their cross-validated scores
    and turns the twenty scores into probabilities; as every step is linear, the model
    saved is their product, one weight matrix. The cross-validated probabilities (the
    stacker's own, cross-validated on the same folds) show what the safety thresholds do
    on examples the model was not fitted on (`cross_validation`).
    """
    settings = policy.model
    labels = np.array([CATEGORIES.index(e.category) for e in examples])
    present = sorted(set(labels.tolist()))
    if len(present) != len(CATEGORIES):
        missing = [c for i, c in enumerate(CATEGORIES) if i not in present]
        raise CorpusError(f"no examples of {missing}")
    texts = [e.text for e in examples]
    normalised = [normalise(t, settings.max_chars) for t in texts]
    chars = make_vectorizer(settings.ngram_range).fit(normalised)
    words = make_word_vectorizer(settings.word_ngram_range).fit([word_text(t) for t in normalised])
    x = features(texts, chars, words, settings.max_chars)
    folds = list(
        StratifiedKFold(n_splits=5, shuffle=True, random_state=settings.seed).split(
            np.zeros(len(labels)), labels
        )
    )
    scores = np.zeros((len(labels), 2 * len(CATEGORIES)))
    for train_rows, test_rows in folds:
        coef, intercept = _base_models(x[train_rows], labels[train_rows], settings)
        scores[test_rows] = x[test_rows] @ coef.T + intercept
    coef, intercept = _base_models(x, labels, settings)
    stacker = _stacker(settings).fit(scores, labels)
    cross_validated = np.zeros((len(labels), len(CATEGORIES)))
    for train_rows, test_rows in folds:
        fold_stacker = _stacker(settings).fit(scores[train_rows], labels[train_rows])
        cross_validated[test_rows] = fold_stacker.predict_proba(scores[test_rows])
    # probabilities = softmax(stacker_coef @ (coef @ x + intercept) + stacker_intercept)
    model = TextModel(
        categories=CATEGORIES,
        vocabulary=_vocabulary(chars.vocabulary_),
        idf=chars.idf_.astype(np.float32),
        word_vocabulary=_vocabulary(words.vocabulary_),
        word_idf=words.idf_.astype(np.float32),
        coef=(stacker.coef_ @ coef).astype(np.float32),
        intercept=(stacker.coef_ @ intercept + stacker.intercept_).astype(np.float32),
        meta={
            "linear_model": "linear SVM and ridge, one-vs-rest, stacked by logistic regression",
            "ngram_range": list(settings.ngram_range),
            "word_ngram_range": list(settings.word_ngram_range),
            "max_chars": settings.max_chars,
            "temperature": 1.0,
            "c": settings.c,
            "ridge_alpha": settings.ridge_alpha,
            "stack_c": settings.stack_c,
            "seed": settings.seed,
            "trained_examples": len(examples),
            "sklearn": sklearn.__version__,
        },
    )
    return model, cross_validated


def _base_models(
    x: sp.csr_matrix, labels: NDArray[np.int_], settings: ModelSettings
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The SVM's and the ridge classifier's weights, stacked: (20 × features, 20)."""
    svm = LinearSVC(C=settings.c, max_iter=5000, random_state=settings.seed).fit(x, labels)
    ridge = RidgeClassifier(alpha=settings.ridge_alpha).fit(x, labels)
    coef = np.vstack([svm.coef_, ridge.coef_]).astype(np.float64)
    intercept = np.concatenate([svm.intercept_, ridge.intercept_]).astype(np.float64)
    return coef, intercept


def _stacker(settings: ModelSettings) -> LogisticRegression:
    return LogisticRegression(C=settings.stack_c, max_iter=5000)


def _vocabulary(index: dict[str, int]) -> tuple[str, ...]:
    vocabulary = [""] * len(index)
    for gram, i in index.items():
        vocabulary[i] = gram
    return tuple(vocabulary)


# Candidate P1 thresholds the cross-validation tries for each urgent category.
THRESHOLD_GRID = (0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.10, 0.12, 0.15, 0.20)
# The share of each P1 category routed P1 the thresholds are chosen for, on the
# cross-validation: above the 99 % the issue asks of the held-out split, since a choice made
# exactly at 99 % on one sample falls below it on the next about as often as not.
P1_TARGET = 0.995


@dataclass(frozen=True)
class ThresholdChoice:
    thresholds: dict[Category, float]
    evaluation: Evaluation


def choose_thresholds(
    probabilities: NDArray[np.float64],
    examples: Sequence[Example],
    policy: ClassifyPolicy,
    target: float = P1_TARGET,
    grid: Sequence[float] = THRESHOLD_GRID,
    budget: float | None = None,
) -> ThresholdChoice | None:
    """The per-category P1 thresholds at which every P1 category is routed P1 at `target`
    or more and at most `budget` of the other examples are (false alarms; default: the
    policy's `false_alarm_budget`), with the fewest P1 examples routed P3/P4 — missing a
    theft costs more than raising a question — then the fewest false alarms, then the
    highest thresholds; None if none qualifies. The thresholds never change a category
    (they raise a priority), so accuracy is not theirs.

    Meant for cross-validated probabilities of the training side: choosing on the held-out
    split would make its scores a tuned figure instead of a test. The search ranks the
    grid with the safety rule in array form; the chosen set is then scored by `decide`.
    """
    urgent = policy.urgent.categories
    columns = [CATEGORIES.index(c) for c in urgent]
    labels = np.array([CATEGORIES.index(e.category) for e in examples])
    # What is decided without the safety rule (thresholds above every probability).
    never = policy.model_copy(
        update={
            "urgent": policy.urgent.model_copy(update={"thresholds": dict.fromkeys(urgent, 1.0)})
        }
    )
    base = np.array(
        [
            CATEGORIES.index(
                decide(
                    row, CATEGORIES, never, text=e.text, redactions=redactions_in(e.text)
                ).category
            )
            for row, e in zip(probabilities, examples, strict=True)
        ]
    )
    already = np.isin(base, columns)  # an urgent category decided (or made by a secret)
    p_urgent = probabilities[:, columns]
    is_urgent = np.isin(labels, columns)
    present = [c for c in columns if (labels == c).any()]
    low = [CATEGORIES.index(c) for c, p in REPORT_PRIORITIES.items() if p in ("P3", "P4")]
    low_base = np.isin(base, low)
    allowed = (policy.urgent.false_alarm_budget if budget is None else budget) * int(
        (~is_urgent).sum()
    )
    best: tuple[tuple[int, int, float], dict[Category, float]] | None = None
    for values in itertools.product(grid, repeat=len(urgent)):
        routed = already | (p_urgent >= np.array(values)).any(axis=1)
        if any(routed[labels == c].mean() < target for c in present):
            continue
        alarms = int((~is_urgent & routed).sum())
        if alarms > allowed:
            continue
        demoted = int((is_urgent & ~routed & low_base).sum())
        key = (-demoted, -alarms, sum(values))
        if best is None or key > best[0]:
            best = (key, dict(zip(urgent, values, strict=True)))
    if best is None:
        return None
    chosen = policy.model_copy(
        update={"urgent": policy.urgent.model_copy(update={"thresholds": best[1]})}
    )
    return ThresholdChoice(
        best[1], evaluate_probabilities(probabilities, CATEGORIES, examples, chosen)
    )


@dataclass(frozen=True)
class Trained:
    model: TextModel
    held_out: Evaluation
    train_count: int
    # The training side and its 5-fold cross-validated probabilities (threshold choice).
    train_side: tuple[Example, ...] = ()
    cross_validated: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 0)))

    def cross_validation(self, policy: ClassifyPolicy) -> Evaluation:
        """The policy's decision on the training side's cross-validated probabilities."""
        return evaluate_probabilities(self.cross_validated, CATEGORIES, self.train_side, policy)


def train(
    corpus: Sequence[Example], policy: ClassifyPolicy, corrections: Sequence[Example] = ()
) -> Trained:
    """Fit on the training side of the split (corrections included), score the held-out side."""
    train_side, held_out = split(corpus, policy.model.held_out)
    # Corrections go to training; their texts are never in the held-out split.
    held = {e.text for e in held_out}
    extra = [e for e in corrections if e.text not in held]
    trained_on = [*train_side, *extra]
    model, cross_validated = fit_cross_validated(trained_on, policy)
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
        train_count=len(trained_on),
        train_side=tuple(trained_on),
        cross_validated=cross_validated,
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
        f"- P1 examples routed P3/P4: {evaluation.urgent_demoted}",
        f"- other examples routed P1 (false alarms): {evaluation.false_alarms:.1%}",
        "",
        "| category | priority | support | precision | recall | routed P1 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for c in CATEGORIES:
        p1 = f"{evaluation.routed_urgent(c):.1%}"
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

    A model file of an older format (plain arrays, written by an earlier version) is
    replaced as if it were missing. Raises `ModelError` or `RulesError` for a model the
    policy refuses: unreadable, pickled, missing a category, or below `min_accuracy` on its
    held-out split.
    """
    model: TextModel | None = None
    if model_path.exists():
        try:
            model = load_model(model_path)
        except OutdatedModelError as exc:
            log.warning(
                "classifier model of an older format: retraining from the corpus",
                extra={"model": str(model_path), "error": str(exc)},
            )
    if model is not None:
        if corpus_dir.is_dir() and model.meta.get("corpus_digest") != digest_of(
            load_corpus(corpus_dir)
        ):
            log.warning(
                "classifier model was built from another corpus: run `omniroute classify train`",
                extra={"model": str(model_path)},
            )
    else:
        log.info(
            "no usable classifier model: training from the corpus", extra={"model": str(model_path)}
        )
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
