"""The classifier the services run, loaded once per test session.

`make test` builds data/classify/model.npz from the corpus before pytest; run alone,
the first test that needs it trains it (seconds) and saves it there.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime

from services.ingest.classify import ClassifyPolicy, classify_many, load_rules
from services.ingest.customers import CustomerRef
from services.ingest.pipeline import Prepared, finish, language_of
from services.ingest.textmodel import TextModel
from services.ingest.training import load_or_train
from shared.contracts.messages import MessageReceived
from shared.settings import REPO_POLICY_DIR, IngestSettings


@functools.cache
def classify_policy() -> ClassifyPolicy:
    return load_rules(REPO_POLICY_DIR / "classify.yaml")


@functools.cache
def text_model() -> TextModel:
    settings = IngestSettings()
    return load_or_train(settings.classifier_model, settings.classifier_corpus, classify_policy())


def complete(
    prepared: Prepared,
    customer: CustomerRef,
    languages: tuple[str, ...] = ("en", "zh"),
    now: datetime | None = None,
) -> MessageReceived:
    """What the ingest handler does after identity: classify, detect language, build the event."""
    [result] = classify_many([prepared.to_classify()], text_model(), classify_policy())
    language = language_of(prepared, customer, languages)
    return finish(prepared, customer, result, language, now or datetime.now(UTC))
