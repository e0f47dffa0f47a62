"""What a customer message is about: a learned model's probabilities and a few hard rules.

Pure: the (already redacted) text and subject, the channel's hint (an IVR choice), what
redaction removed, the model and the policy (policy/classify.yaml) go in; a
`Classification` with short reasons comes out. `classify_many` scores a whole Kafka batch
with one vectorisation, which is what keeps the model's cost per message small.

The decision, in order (policy/classify.yaml says why each rule is there):
  1. the model's probabilities, plus `hint_weight` on the channel's hinted category;
  2. the likeliest category wins; where that is `general` (no topic), the hint does;
  3. a redacted seed phrase, private key or password makes it `secret_exposed`;
  4. otherwise, an urgent (P1) category at least its `urgent.thresholds` likely is named
     beside the category (`possible_urgent`), whatever the hint: the router gives the
     ticket that category's priority (P1) and the reason "possible stolen_funds p=0.41",
     while the category stays the likeliest one. Safety first raises the priority of a
     question that might be a theft; it does not relabel it;
  5. a message with no words at all takes the hint, or `general`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Self

import numpy as np
import yaml
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.ingest.redact import MARKER_PATTERN, RedactionKind
from services.ingest.signals import SignalRules, extract_signals
from services.ingest.textmodel import TextModel
from shared.contracts.common import CATEGORIES, Category
from shared.contracts.messages import Redaction, Signals

_WORDS = re.compile(r"[^\W\d_]", re.UNICODE)


class RulesError(ValueError):
    """policy/classify.yaml is missing, not YAML, or does not validate."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelSettings(_Strict):
    ngram_range: tuple[int, int] = (1, 4)
    word_ngram_range: tuple[int, int] = (1, 2)
    max_chars: int = Field(default=2000, ge=50, le=100_000)
    c: float = Field(default=2.0, gt=0)
    # The ridge classifier's regularisation, and the stacker's inverse regularisation.
    ridge_alpha: float = Field(default=1.0, gt=0)
    stack_c: float = Field(default=1.0, gt=0)
    seed: int = 20261207
    held_out: float = Field(default=0.15, gt=0, lt=0.5)

    @model_validator(mode="after")
    def _range(self) -> Self:
        for name in ("ngram_range", "word_ngram_range"):
            low, high = getattr(self, name)
            if not 1 <= low <= high <= 8:
                raise ValueError(f"{name} must be 1 <= low <= high <= 8")
        return self


class Urgent(_Strict):
    categories: tuple[Category, ...] = ("stolen_funds", "account_takeover", "secret_exposed")
    threshold: float = Field(default=0.25, gt=0, le=1)
    # Per category, overriding `threshold`: each P1 category is confused with different
    # neighbours, so each needs its own probability to reach the same recall.
    thresholds: dict[Category, float] = Field(default_factory=dict)
    # The share of other (non-P1) messages the thresholds may raise to P1, on the training
    # side's cross-validation, when they are chosen (`omniroute classify evaluate`).
    false_alarm_budget: float = Field(default=0.10, gt=0, le=1)

    @model_validator(mode="after")
    def _known(self) -> Self:
        stray = sorted(set(self.thresholds) - set(self.categories))
        if stray:
            raise ValueError(f"thresholds for categories that are not urgent: {stray}")
        if not all(0 < t <= 1 for t in self.thresholds.values()):
            raise ValueError("thresholds are probabilities in (0, 1]")
        return self

    def threshold_of(self, category: Category) -> float:
        return self.thresholds.get(category, self.threshold)


class ClassifyPolicy(_Strict):
    """policy/classify.yaml, validated."""

    version: Literal[2]
    model: ModelSettings = ModelSettings()
    min_accuracy: float = Field(ge=0, le=1)
    urgent: Urgent = Urgent()
    hint_weight: float = Field(default=0.5, ge=0)
    secret_redactions: frozenset[RedactionKind]
    reasons_top: int = Field(default=3, ge=1, le=10)
    texts_kept_s: float = Field(
        default=30 * 86400,
        gt=0,
        description="How long classified texts are kept for agents' corrections to find",
    )
    signals: SignalRules


@dataclass(frozen=True)
class Classification:
    category: Category
    reasons: tuple[str, ...]
    probabilities: tuple[tuple[Category, float], ...] = ()  # likeliest first
    signals: Signals = field(default_factory=Signals)
    # An urgent category likely enough to route the message as urgent (P1), though the
    # likeliest category is another one.
    possible_urgent: Category | None = None

    def urgent(self, policy: ClassifyPolicy) -> bool:
        """Routed as urgent (P1): by its category, or by a possible urgent one."""
        return self.category in policy.urgent.categories or self.possible_urgent is not None


@dataclass(frozen=True)
class ToClassify:
    text: str
    subject: str | None = None
    hint: Category | None = None
    redactions: tuple[Redaction, ...] = ()

    @property
    def full(self) -> str:
        return f"{self.subject}\n{self.text}" if self.subject else self.text


def default_rules_path() -> Path:
    return Path(__file__).resolve().parents[2] / "policy" / "classify.yaml"


def load_rules(path: Path) -> ClassifyPolicy:
    """Read and validate the policy; any problem raises `RulesError` naming the file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return ClassifyPolicy.model_validate(data)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise RulesError(f"{path}: {exc}") from exc


def classify_many(
    items: Sequence[ToClassify], model: TextModel, policy: ClassifyPolicy
) -> list[Classification]:
    """Each item's category, reasons and signals; one model call for the whole batch."""
    texts = [item.full for item in items]
    probabilities = model.probabilities(texts)
    out = []
    for item, text, row in zip(items, texts, probabilities, strict=True):
        decided = decide(
            row,
            model.categories,
            policy,
            text=text,
            hint=item.hint,
            redactions=item.redactions,
        )
        signals = extract_signals(MARKER_PATTERN.sub(" ", text), policy.signals)
        out.append(
            Classification(
                decided.category,
                decided.reasons,
                decided.probabilities,
                signals,
                decided.possible_urgent,
            )
        )
    return out


def classify(
    text: str,
    subject: str | None,
    model: TextModel,
    policy: ClassifyPolicy,
    hint: Category | None = None,
    redactions: tuple[Redaction, ...] = (),
) -> Classification:
    return classify_many([ToClassify(text, subject, hint, redactions)], model, policy)[0]


def decide(
    row: NDArray[np.float64],
    categories: Sequence[Category],
    policy: ClassifyPolicy,
    *,
    text: str,
    hint: Category | None = None,
    redactions: tuple[Redaction, ...] = (),
) -> Classification:
    """The category from one row of model probabilities and the hard rules."""
    p = {c: float(v) for c, v in zip(categories, row, strict=True)}
    ranked = sorted(p.items(), key=lambda cp: -cp[1])
    shown = ", ".join(f"{c} {v:.2f}" for c, v in ranked[: policy.reasons_top])
    reasons = [f"model: {shown}"]
    if not _WORDS.search(MARKER_PATTERN.sub(" ", text)):
        reasons = ["no words to classify"]
        ranked = []
        p = dict.fromkeys(categories, 0.0)
    weighted = dict(p)
    if hint is not None and policy.hint_weight > 0:
        weighted[hint] = weighted.get(hint, 0.0) + policy.hint_weight
        reasons.append(f"hint: {hint}")
    category: Category = (
        max(weighted, key=lambda c: weighted[c]) if any(weighted.values()) else "general"
    )
    if hint is not None and category == "general":
        category = hint  # the text names no topic ("please call me back"): the caller's did
    secrets = sorted({r.kind for r in redactions if r.kind in policy.secret_redactions})
    possible_urgent: Category | None = None
    if secrets:
        category = "secret_exposed"
        reasons.extend(f"redaction: {kind} → secret_exposed" for kind in secrets)
    elif category not in policy.urgent.categories:
        possible = [
            (c, p.get(c, 0.0))
            for c in policy.urgent.categories
            if p.get(c, 0.0) >= policy.urgent.threshold_of(c)
        ]
        if possible:
            possible_urgent, chance = max(possible, key=lambda cp: cp[1])
            reasons.append(f"possible {possible_urgent} p={chance:.2f}")
    return Classification(
        category,
        tuple(reasons),
        tuple(ranked[: policy.reasons_top]),
        possible_urgent=possible_urgent,
    )


def check_model(model: TextModel, policy: ClassifyPolicy) -> None:
    """Refuse a model that lacks a category or scored below `min_accuracy` when trained."""
    if sorted(model.categories) != sorted(CATEGORIES):
        raise RulesError("the model does not know every category")
    held_out = model.meta.get("held_out")
    accuracy = held_out.get("accuracy") if isinstance(held_out, dict) else None
    if not isinstance(accuracy, int | float):
        raise RulesError("the model carries no held-out evaluation")
    if accuracy < policy.min_accuracy:
        raise RulesError(
            f"the model's held-out accuracy {accuracy:.1%} is below the policy's "
            f"minimum {policy.min_accuracy:.1%}"
        )
