"""Classification through every channel's parser: what the customer wrote decides, not how.

Each message goes through `prepare` (parse + redact), then classification, language and
`finish` exactly as the ingest handler runs them, in the provider's own payload shape,
with and without the `provider` header (sniffed).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.ingest.customers import CustomerRef
from services.ingest.pipeline import IngestPolicy, Prepared, load_policy, prepare
from shared.contracts.messages import MessageReceived
from shared.settings import REPO_POLICY_DIR
from tests.support.classifier import complete
from tests.support.payloads import SHAPES, SHAPES_BY_NAME, Shape, email_gbk

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
CUSTOMER = CustomerRef("cus_test", tier="vip1")

STOLEN = [
    ("en", "Someone withdrew all my USDT and I did not make this withdrawal! Please freeze it."),
    ("en", "There was an unauthorized withdrawal of 1,200 USDT from my account"),
    ("en", "my wallet was drained an hour ago, the withdrawal wasn't me"),
    ("en", "A hacker transferred everything out of my spot wallet"),
    ("zh", "我的账户被盗了，资产被转走，请马上帮我冻结账户"),
    ("zh", "有一笔未经我授权的提现，2000 USDT没了"),
    ("zh", "提现不是我操作的，钱全部没了"),
    ("zh", "资产被盗，未授权提现"),
]

# How-to questions about withdrawing: information, not a withdrawal problem.
HOWTO = [
    "how do I withdraw to my bank?",
    "怎么提现？",
    "Can I withdraw to a Binance address?",
    "可以提现到银行卡吗？",
    "How do I cash out to my bank card?",
    "如何提币到我的钱包？",
    "Is it possible to withdraw USDT on TRC20?",
    "提现要怎么操作？",
    "Hi,\n\nhow can I withdraw my BTC to a hardware wallet?\n\nThanks,\nAnn",
]


@pytest.fixture(scope="module")
def policy() -> IngestPolicy:
    return load_policy(REPO_POLICY_DIR / "ingest.yaml")


def through_ingest(
    raw: bytes, shape: Shape, provider: str | None, policy: IngestPolicy
) -> MessageReceived:
    results = prepare(shape.channel, provider, raw, policy.parser)
    assert len(results) == 1
    [prepared] = results
    assert isinstance(prepared, Prepared), prepared
    message = complete(prepared, CUSTOMER, policy.languages, NOW)
    assert (message.channel, message.provider) == (shape.channel, shape.provider)
    return message


@pytest.mark.parametrize("sniffed", [False, True], ids=["header", "sniffed"])
@pytest.mark.parametrize(("language", "text"), STOLEN, ids=[t[:24] for _, t in STOLEN])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_stolen_funds_from_every_channel(
    shape: Shape,
    language: str,
    text: str,
    sniffed: bool,
    policy: IngestPolicy,
) -> None:
    raw = shape.build(41, text)
    message = through_ingest(raw, shape, None if sniffed else shape.provider, policy)

    # Every theft report reaches P1 whatever the channel; the model's view leads the reasons.
    assert message.category in ("stolen_funds", "account_takeover"), message.reasons
    assert message.language == language
    assert message.reasons[0].startswith("model: ")
    assert message.customer_id == CUSTOMER.customer_id
    assert message.customer_tier == "vip1"
    assert message.redactions == ()


def test_gbk_email_carries_the_chinese_text_intact(policy: IngestPolicy) -> None:
    # GBK bytes on the wire, nothing a UTF-8 decoder could read.
    raw = email_gbk(42, "资产被盗，未授权提现，请冻结账户", subject="紧急：账户被盗")
    assert "资产被盗".encode() not in raw
    assert "资产被盗".encode("gbk") in raw

    message = through_ingest(raw, SHAPES_BY_NAME["email-gbk"], "smtp", policy)

    assert message.text == "资产被盗，未授权提现，请冻结账户"
    assert message.subject == "紧急：账户被盗"
    assert message.category == "stolen_funds"
    assert message.language == "zh"


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_how_to_withdraw_questions_are_mostly_not_withdrawals(
    shape: Shape, policy: IngestPolicy
) -> None:
    decided = {
        text: through_ingest(shape.build(43 + i, text), shape, shape.provider, policy).category
        for i, text in enumerate(HOWTO)
    }

    # Information, not a withdrawal problem: not P2 work (a learned model, judged as a set).
    wrong = {t: c for t, c in decided.items() if c in ("withdrawal", "deposit")}
    assert len(wrong) <= len(HOWTO) // 5, wrong


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_a_withdrawal_problem_still_is_one(shape: Shape, policy: IngestPolicy) -> None:
    # The control for the how-to case: the same topic with a problem cue.
    text = "my withdrawal has been stuck for 6 hours, 提现一直卡住"
    message = through_ingest(shape.build(44, text), shape, shape.provider, policy)

    assert message.category == "withdrawal"
