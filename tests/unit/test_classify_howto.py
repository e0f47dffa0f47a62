"""Questions about fees, limits and timing are not withdrawal or deposit problems."""

from __future__ import annotations

import pytest

from services.ingest.classify import classify
from tests.support.classifier import classify_policy, text_model


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("What is the withdrawal fee for USDT?", "en"),
        ("how long does a withdrawal take?", "en"),
        ("提现手续费是多少？", "zh"),
        ("提现最低多少？", "zh"),
        ("提现需要多久？", "zh"),
    ],
)
def test_questions_are_not_problems(text: str, language: str) -> None:
    category = classify(text, None, text_model(), classify_policy()).category
    assert category not in ("withdrawal", "deposit")


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("my withdrawal is stuck, how long?", "en"),
        ("提现一直在审核中，还要多久", "zh"),
        ("我的提现三天了还没到账，要等多久？", "zh"),
    ],
)
def test_waiting_customers_still_have_a_withdrawal_problem(text: str, language: str) -> None:
    assert classify(text, None, text_model(), classify_policy()).category == "withdrawal"
