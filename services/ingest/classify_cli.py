"""`omniroute classify train | evaluate | "text…"`: build, score and try the classifier.

    omniroute classify train [--include-corrections]     corpus (+ agents' corrections) → model
    omniroute classify evaluate [--include-corrections]  held-out scores (before / after)
    omniroute classify "my usdt is gone"                 category, probabilities, reasons

Paths and the store come from the ingest settings (`OMNIROUTE_CLASSIFIER_MODEL`,
`OMNIROUTE_CLASSIFIER_CORPUS`, `OMNIROUTE_MONGO_URI`, `OMNIROUTE_MONGO_DB`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from services.ingest.classify import (
    ClassifyPolicy,
    RulesError,
    check_model,
    classify,
    load_rules,
)
from services.ingest.pipeline import merge_redactions
from services.ingest.redact import redact
from services.ingest.store import MongoTrainingStore
from services.ingest.textmodel import ModelError, load_model, save_model
from services.ingest.training import (
    P1_TARGET,
    CorpusError,
    Evaluation,
    Example,
    Trained,
    choose_thresholds,
    corrections_of,
    evaluate,
    load_corpus,
    load_or_train,
    report,
    split,
    train,
)
from shared.contracts.common import Category
from shared.mongo import make_mongo_client
from shared.settings import IngestSettings


async def _corrections(settings: IngestSettings) -> list[Example]:
    client = make_mongo_client(settings)
    try:
        store = MongoTrainingStore(client[settings.mongo_db], texts_kept_s=1)
        return corrections_of(await store.examples())
    finally:
        await client.close()


def _thresholds(trained: Trained, policy: ClassifyPolicy) -> str:
    """The P1 thresholds on a cross-validation of the training side: the policy's, and the
    sets routing every P1 category P1 at >= 99 % and at `P1_TARGET` there with the fewest
    P1 examples routed P3/P4 within the policy's false-alarm budget."""
    current = trained.cross_validation(policy)
    lines = [
        "### P1 thresholds: 5-fold cross-validation of the training side",
        "",
        f"- policy {_shown(policy.urgent.categories, policy.urgent.threshold_of)}: "
        f"{_figures(current)}",
    ]
    for target in sorted({0.99, P1_TARGET}):
        chosen = choose_thresholds(trained.cross_validated, trained.train_side, policy, target)
        if chosen is None:
            lines.append(
                f"- no thresholds of the grid route every P1 category P1 at >= {target:.1%} "
                f"within the false-alarm budget {policy.urgent.false_alarm_budget:.0%}"
            )
        else:
            lines.append(
                f"- fewest P1 routed P3/P4 at >= {target:.1%} each, false alarms <= "
                f"{policy.urgent.false_alarm_budget:.0%} "
                f"{_shown(policy.urgent.categories, chosen.thresholds.__getitem__)}: "
                f"{_figures(chosen.evaluation)}"
            )
    return "\n".join(lines)


def _shown(categories: Sequence[Category], threshold: Callable[[Category], float]) -> str:
    return "(" + ", ".join(f"{c} {threshold(c):.2f}" for c in categories) + ")"


def _figures(evaluation: Evaluation) -> str:
    routed = " / ".join(f"{evaluation.routed_urgent(c):.1%}" for c in evaluation.urgent)
    return (
        f"accuracy {evaluation.accuracy:.1%} (top category {evaluation.raw_accuracy:.1%}), "
        f"routed P1 {routed}, P1 routed P3/P4 {evaluation.urgent_demoted}, "
        f"other routed P1 {evaluation.false_alarms:.1%}"
    )


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="omniroute classify", description=__doc__)
    parser.add_argument("what", nargs="+", help='"train", "evaluate", or a message text')
    parser.add_argument(
        "--include-corrections",
        action="store_true",
        help="add the agents' corrections from ingest's store to the training side",
    )
    args = parser.parse_args(argv)
    settings = IngestSettings()
    try:
        policy = load_rules(settings.policy_dir / "classify.yaml")
        corpus = load_corpus(settings.classifier_corpus)
        corrections = asyncio.run(_corrections(settings)) if args.include_corrections else []
        command = args.what[0] if len(args.what) == 1 else None
        if command == "train":
            trained = train(corpus, policy, corrections)
            check_model(trained.model, policy)
            save_model(trained.model, settings.classifier_model)
            print(
                f"trained on {trained.train_count} examples "
                f"({len(corrections)} corrections offered), held out {trained.held_out.total}: "
                f"accuracy {trained.held_out.accuracy:.1%}, "
                f"P1 recall {trained.held_out.urgent_recall:.1%} → {settings.classifier_model}"
            )
            return 0
        if command == "evaluate":
            before = train(corpus, policy)
            print(report(before.held_out, "Held-out split: corpus only"))
            if args.include_corrections:
                after = train(corpus, policy, corrections)
                print()
                print(
                    report(after.held_out, f"Held-out split: with {len(corrections)} corrections")
                )
                if corrections:
                    was = evaluate(before.model, corrections, policy)
                    now = evaluate(after.model, corrections, policy)
                    print(
                        f"\nThe corrections themselves: {was.correct}/{was.total} right before, "
                        f"{now.correct}/{now.total} after"
                    )
            _, held_out = split(corpus, policy.model.held_out)
            print(f"\n(held out: {len(held_out)} of {len(corpus)} examples, never trained on)")
            print()
            print(_thresholds(before, policy))
            challenge_dir = settings.classifier_corpus.parent / "challenge"
            if challenge_dir.is_dir():
                # Written by someone who never saw the corpus: wording the model was not
                # trained near. Not used for training or for the minimum accuracy.
                challenge = load_corpus(challenge_dir)
                print()
                print(
                    report(evaluate(before.model, challenge, policy), "Independent challenge set")
                )
            return 0
        model = (
            load_model(settings.classifier_model)
            if settings.classifier_model.exists()
            else load_or_train(settings.classifier_model, settings.classifier_corpus, policy)
        )
        text, found = redact(" ".join(args.what))
        result = classify(text, None, model, policy, redactions=merge_redactions(found))
        print(f"category: {result.category}")
        for category, p in result.probabilities:
            print(f"  {category:<17} {p:.3f}")
        for reason in result.reasons:
            print(f"reason: {reason}")
        return 0
    except (CorpusError, ModelError, RulesError) as exc:
        print(f"omniroute classify: {exc}", file=sys.stderr)
        return 2
