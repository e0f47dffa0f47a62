"""Classification: the learned model on messages it never saw, the hard rules, the signals.

The example messages here were written before the corpus and are not in it: they check
the model the services load (data/classify/model.npz), not the corpus against itself.
"""

from __future__ import annotations

import json
import pickle
import random
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC

from services.ingest.classify import (
    Classification,
    ClassifyPolicy,
    RulesError,
    Urgent,
    check_model,
    classify,
    decide,
    default_rules_path,
    load_rules,
)
from services.ingest.redact import redact
from services.ingest.signals import extract_signals
from services.ingest.textmodel import (
    REDACTION_KINDS,
    ModelError,
    features,
    load_model,
    make_vectorizer,
    make_word_vectorizer,
    mark_negation,
    normalise,
    redaction_features,
    save_model,
    word_text,
)
from services.ingest.training import (
    Example,
    choose_thresholds,
    evaluate_probabilities,
    fit_cross_validated,
    load_or_train,
)
from shared.contracts.common import CATEGORIES, Category
from shared.contracts.messages import Amount, Redaction, Signals, WalletAddress
from tests.support.base58 import b58, b58check
from tests.support.classifier import classify_policy, text_model


def category_of(text: str, subject: str | None = None) -> Category:
    return classify(text, subject, text_model(), classify_policy()).category


def signals_of(text: str) -> Signals:
    return extract_signals(text, classify_policy().signals)


STOLEN_EN = [
    "someone withdrew all my USDT",
    "I didn't make this withdrawal, please freeze my account now",
    "Someone logged into my account and stole 0.5 BTC",
    "My funds are gone! All my USDT disappeared overnight",
    "There was an unauthorized withdrawal of 1,200 USDT from my account",
    "I have no idea how someone withdrew all my ETH",
    "The withdrawal wasn't me, I never requested it",
    "my wallet was drained an hour ago",
    "A hacker transferred everything out of my spot wallet",
    "I can't believe someone stole my coins while I was asleep",
]

STOLEN_ZH = [
    "资产被盗",
    "账户被盗了，请马上冻结",
    "未授权提现",
    "我的币被人转走了",
    "有一笔未经我授权的提现，2000 USDT没了",
    "提现不是我操作的，钱全部没了",
    "我没有提现，但是余额少了500U",
    "今天早上发现USDT全部不见了",
    "我的ETH被黑客转走了怎么办",
]


# A learned model is judged on sets, not on one sentence: each set below must be right
# at least at the rate the policy promises, and every miss is named when it is not.
# Theft is the exception: every report must reach P1.


def misses(cases: list[tuple[str, Category]], ok: object) -> list[str]:
    assert callable(ok)
    return [f"{text!r} → {category_of(text)}" for text, want in cases if not ok(text, want)]


@pytest.mark.parametrize("text", STOLEN_EN + STOLEN_ZH)
def test_every_theft_report_is_routed_p1(text: str) -> None:
    result = classify(text, None, text_model(), classify_policy())

    assert result.urgent(classify_policy()), result.reasons


def test_theft_reports_are_mostly_seen_as_theft() -> None:
    cases = [(t, "stolen_funds") for t in STOLEN_EN + STOLEN_ZH]
    wrong = misses(cases, lambda t, want: category_of(t) == want)

    assert len(wrong) <= len(cases) // 10, wrong


CATEGORIES_BY_EXAMPLE = [
    ("my account was hacked", "en", "account_takeover"),
    ("2FA was changed and not by me", "en", "account_takeover"),
    (
        "my email has been changed, someone logged in from an unknown device",
        "en",
        "account_takeover",
    ),
    ("账户被黑了，邮箱被人改了", "zh", "account_takeover"),
    ("充值未到账", "zh", "deposit"),
    ("my deposit has not arrived after 3 hours", "en", "deposit"),
    ("提现一直在审核中", "zh", "withdrawal"),
    ("my withdrawal is stuck, how long?", "en", "withdrawal"),
    ("充值未到账怎么办？", "zh", "deposit"),
    ("How can I recover a deposit I sent to the wrong network?", "en", "deposit"),
    ("I can't log in, my 2FA code doesn't work", "en", "login_2fa"),
    ("谷歌验证器丢了，登录不了", "zh", "login_2fa"),
    ("my KYC verification failed three times", "en", "kyc"),
    ("实名认证一直失败", "zh", "kyc"),
    (
        "someone pretending to be support asked me to pay to unfreeze my account",
        "en",
        "scam_report",
    ),
    ("有人冒充你们客服让我转币", "zh", "scam_report"),
    ("I gave my seed phrase to a support agent on telegram", "en", "secret_exposed"),
    ("我把助记词告诉了一个客服", "zh", "secret_exposed"),
    ("why are the futures trading fees so high on my limit order?", "en", "trading"),
    ("合约爆仓了，强平价格不对", "zh", "trading"),
    ("hello", "en", "general"),
    ("你好", "zh", "general"),
]


def test_categories_of_examples_written_before_the_corpus() -> None:
    cases = [(t, c) for t, _, c in CATEGORIES_BY_EXAMPLE]
    wrong = misses(cases, lambda t, want: category_of(t) == want)

    assert len(wrong) <= len(cases) // 10, wrong


HOWTO = [
    ("how do I withdraw to my bank?", "en"),
    ("How can I deposit USDT on TRC20?", "en"),
    ("Can I withdraw to a Binance address?", "en"),
    ("What is the minimum withdrawal amount? how to withdraw", "en"),
    ("怎么提现？", "zh"),
    ("如何充值USDT？", "zh"),
    ("可以提现到银行卡吗？", "zh"),
    ("请问怎样充币到你们平台", "zh"),
]


def test_how_to_questions_are_mostly_not_money_problems() -> None:
    cases = [(t, "general") for t, _ in HOWTO]
    wrong = misses(cases, lambda t, _: category_of(t) not in ("withdrawal", "deposit"))

    assert len(wrong) <= len(cases) // 5, wrong


NEGATED = [
    (
        "my account was not hacked, I just forgot my password",
        "en",
        "account_takeover",
        "negated: 'not hacked'",
    ),
    (
        "I was never hacked, I only need a password reset",
        "en",
        "account_takeover",
        "negated: 'never hacked'",
    ),
    ("Nothing was stolen, I just can't log in", "en", "stolen_funds", None),
    ("我的账户没有被盗，只是忘记密码了", "zh", "stolen_funds", "negated: '没有被盗'"),
    ("币没有被转走，只是提现慢", "zh", "stolen_funds", None),
    ("I never shared my seed phrase, but now I can't log in", "en", "secret_exposed", None),
    ("我从来没有把助记词告诉任何人，但是登录不了", "zh", "secret_exposed", None),
]


def test_negated_risks_are_mostly_not_the_category() -> None:
    cases = [(t, c) for t, _, c, _ in NEGATED]
    wrong = misses(cases, lambda t, negated: category_of(t) != negated)

    assert len(wrong) <= len(cases) // 4, wrong


LOOK_ALIKES = [
    # these look negated but are the complaint itself
    ("I didn't authorize this transfer", "en", "stolen_funds"),
    ("未授权提现，请冻结", "zh", "stolen_funds"),
    ("充值未到账", "zh", "deposit"),
    ("is my account hacked? I don't know who logged in", "en", "account_takeover"),
    ("我的账户是不是被盗了", "zh", "stolen_funds"),
    ("I have not received my withdrawal", "en", "withdrawal"),
]


@pytest.mark.parametrize(("text", "language", "category"), LOOK_ALIKES)
def test_negation_look_alikes_keep_their_priority(text: str, language: str, category: str) -> None:
    decided = category_of(text)
    urgent = set(classify_policy().urgent.categories)
    # "我的账户是不是被盗了" is a takeover or a theft: either is P1 work.
    assert decided == category or {decided, category} <= urgent


# --- the decision on top of the model (pure, on hand-made probabilities) -----------------


def row(**p: float) -> np.ndarray:
    rest = (1 - sum(p.values())) / (len(CATEGORIES) - len(p))
    return np.array([p.get(c, rest) for c in CATEGORIES])


def test_the_likeliest_category_wins_and_reasons_show_the_top_three() -> None:
    result = decide(row(deposit=0.7, withdrawal=0.25), CATEGORIES, classify_policy(), text="x y")

    assert result.category == "deposit"
    assert result.reasons[0].startswith("model: deposit 0.70, withdrawal 0.25, ")
    assert [c for c, _ in result.probabilities][:2] == ["deposit", "withdrawal"]


@pytest.mark.parametrize("urgent", ["stolen_funds", "account_takeover", "secret_exposed"])
def test_a_possible_p1_category_is_named_at_its_own_threshold(urgent: Category) -> None:
    policy = classify_policy()
    threshold = policy.urgent.threshold_of(urgent)

    def decided(p: float) -> Classification:
        return decide(row(general=1 - p, **{urgent: p}), CATEGORIES, policy, text="x")

    above, below = decided(threshold + 0.005), decided(threshold - 0.005)

    # Safety first raises the priority (the router reads `possible_urgent`); the category
    # stays the likeliest.
    assert (above.category, above.possible_urgent) == ("general", urgent)
    assert above.urgent(policy)
    assert f"possible {urgent} p={threshold + 0.005:.2f}" in above.reasons
    assert (below.category, below.possible_urgent) == ("general", None)
    assert not below.urgent(policy)


def test_a_likeliest_p1_category_needs_no_possible_one() -> None:
    result = decide(
        row(stolen_funds=0.5, account_takeover=0.4), CATEGORIES, classify_policy(), text="x"
    )

    assert (result.category, result.possible_urgent) == ("stolen_funds", None)
    assert result.urgent(classify_policy())


def test_each_p1_category_has_the_threshold_the_policy_gives_it() -> None:
    policy = classify_policy().model_copy(
        update={
            "urgent": Urgent(threshold=0.3, thresholds={"account_takeover": 0.02}),
        }
    )
    takeover = row(general=0.95, account_takeover=0.05)
    theft = row(general=0.95, stolen_funds=0.05)

    assert decide(takeover, CATEGORIES, policy, text="x").possible_urgent == "account_takeover"
    assert decide(theft, CATEGORIES, policy, text="x").possible_urgent is None


def test_the_likelier_of_two_possible_p1_categories_is_taken() -> None:
    policy = classify_policy().model_copy(update={"urgent": Urgent(threshold=0.1)})

    result = decide(
        row(general=0.6, stolen_funds=0.15, account_takeover=0.25), CATEGORIES, policy, text="x"
    )

    assert (result.category, result.possible_urgent) == ("general", "account_takeover")
    assert "possible account_takeover p=0.25" in result.reasons


@pytest.mark.parametrize("kind", ["seed_phrase", "private_key", "password"])
def test_a_redacted_secret_makes_the_message_secret_exposed(kind: str) -> None:
    result = decide(
        row(trading=0.9),
        CATEGORIES,
        classify_policy(),
        text="my order [REDACTED:password]",
        redactions=(Redaction(kind=kind, count=1),),  # type: ignore[arg-type]
    )

    assert result.category == "secret_exposed"
    assert f"redaction: {kind} → secret_exposed" in result.reasons


def test_a_one_time_code_alone_is_not_an_exposed_secret() -> None:
    text, redactions = redact("I can't log in, 2FA code 123456 is rejected")

    result = classify(text, None, text_model(), classify_policy(), redactions=redactions)

    assert redactions == (Redaction(kind="otp_code", count=1),)
    assert result.category == "login_2fa"


def test_pasted_seed_phrase_end_to_end() -> None:
    from mnemonic import Mnemonic

    phrase = Mnemonic("english").to_mnemonic(random.Random(1).randbytes(16))
    text, redactions = redact(f"support asked for my words: {phrase}")

    result = classify(text, None, text_model(), classify_policy(), redactions=redactions)

    assert result.category == "secret_exposed"
    assert all(phrase.split()[0] not in r for r in result.reasons)


def test_the_channel_hint_decides_only_when_the_text_says_little() -> None:
    policy, model = classify_policy(), text_model()

    empty = classify("", None, model, policy, hint="withdrawal")
    vague = classify("please call me back", None, model, policy, hint="withdrawal")
    strong = classify("资产被盗，钱全没了", None, model, policy, hint="trading")

    assert empty.category == "withdrawal"
    assert empty.reasons == ("no words to classify", "hint: withdrawal")
    # The hint decides (a P1 category passing its threshold would raise the priority).
    assert vague.category == "withdrawal"
    assert "hint: withdrawal" in vague.reasons
    assert strong.category == "stolen_funds"


def test_no_words_and_no_hint_is_general() -> None:
    assert classify("  12345 !!", None, text_model(), classify_policy()).category == "general"


def test_subject_counts() -> None:
    assert category_of("please help asap", "Unauthorized withdrawal from my account") in (
        "stolen_funds",
        "account_takeover",
    )


def test_reasons_are_short_and_never_quote_the_text() -> None:
    text = "Someone withdrew all my USDT from UID 87654321 while I was sleeping " * 5

    result = classify(text, None, text_model(), classify_policy())

    assert all(len(r) <= 80 for r in result.reasons)
    assert not any("87654321" in r or "sleeping" in r for r in result.reasons)


def test_a_batch_is_scored_as_each_message_alone() -> None:
    from services.ingest.classify import ToClassify, classify_many

    texts = ["my deposit never arrived", "资产被盗", "hi", "KYC rejected again"]
    batch = classify_many([ToClassify(t) for t in texts], text_model(), classify_policy())

    assert [r.category for r in batch] == [category_of(t) for t in texts]


# --- the model file ----------------------------------------------------------------------


def test_a_pickled_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.npz"
    path.write_bytes(pickle.dumps({"coef": [1.0]}))

    with pytest.raises(ModelError, match="pickle"):
        load_model(path)


def test_an_archive_holding_a_pickled_array_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.npz"
    with path.open("wb") as out:
        np.savez(out, meta=np.array([{"format": "x"}], dtype=object))

    with pytest.raises(ModelError):
        load_model(path)


def write_format_1(path: Path) -> None:
    with path.open("wb") as out:
        np.savez(
            out,
            vocabulary=np.array(["ab"]),
            idf=np.ones(1, dtype=np.float32),
            coef=np.zeros((len(CATEGORIES), 1), dtype=np.float32),
            intercept=np.zeros(len(CATEGORIES), dtype=np.float32),
            categories=np.array(CATEGORIES),
            meta=np.array([json.dumps({"format": "omniroute-textmodel/1"})]),
        )


def test_a_model_of_an_older_format_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "model.npz"
    write_format_1(path)

    with pytest.raises(ModelError, match="omniroute classify train"):
        load_model(path)


def test_a_model_of_an_older_format_is_replaced_by_training_at_start_up(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lines = [
        json.dumps(
            {"text": f"{c} message number {i}", "language": "en", "category": c, "register": "chat"}
        )
        for c in CATEGORIES
        for i in range(7)
    ]
    (corpus / "tiny.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    path = tmp_path / "model.npz"
    write_format_1(path)
    lenient = classify_policy().model_copy(update={"min_accuracy": 0.0})

    model = load_or_train(path, corpus, lenient)

    assert load_model(path).meta["corpus_digest"] == model.meta["corpus_digest"]


def test_a_model_round_trips_as_plain_arrays(tmp_path: Path) -> None:
    path = tmp_path / "model.npz"
    save_model(text_model(), path)

    again = load_model(path)
    texts = ["withdrawal stuck 3 days", "被盗了"]

    assert np.allclose(again.probabilities(texts), text_model().probabilities(texts))


def test_a_model_below_the_minimum_accuracy_is_refused() -> None:
    strict = classify_policy().model_copy(update={"min_accuracy": 1.01})

    check_model(text_model(), classify_policy())
    with pytest.raises(RulesError, match="below the policy"):
        check_model(text_model(), strict)


# --- signals ---------------------------------------------------------------------------


def test_signals_are_extracted_exactly() -> None:
    rng = random.Random(7)
    evm_tx = "0x" + rng.randbytes(32).hex()
    btc_tx = rng.randbytes(32).hex().upper()
    evm = "0x742d35Cc6634C0532925a3b844Bc454e4438f44e"
    legacy = b58check(b"\x00" + rng.randbytes(20))
    p2sh = b58check(b"\x05" + rng.randbytes(20))
    tron = b58check(b"\x41" + rng.randbytes(20))
    segwit = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"
    taproot = "bc1p5d7rjq7g6rdk2yhzks9smlaqtedr4dekq08ge8ztwac72sfr9rusxg3297"
    text = (
        f"UID 12345678 here. Deposit 0.5 BTC to {segwit}, txid {btc_tx}; "
        f"also 1,200 USDT from {tron} and 2 个 ETH to {evm} (tx {evm_tx}). "
        f"Old addresses {legacy} {p2sh} {taproot}. 充值5000u, 订单号 202401011234, "
        f"order #987654321, 用户ID：87654321"
    )

    signals = signals_of(text)

    assert signals.tx_hashes == (evm_tx, btc_tx.lower())
    assert signals.addresses == (
        WalletAddress(chain="btc", address=segwit),
        WalletAddress(chain="tron", address=tron),
        WalletAddress(chain="eth", address=evm),
        WalletAddress(chain="btc", address=legacy),
        WalletAddress(chain="btc", address=p2sh),
        WalletAddress(chain="btc", address=taproot),
    )
    assert signals.amounts == (
        Amount(value=Decimal("0.5"), asset="BTC"),
        Amount(value=Decimal("1200"), asset="USDT"),
        Amount(value=Decimal("2"), asset="ETH"),
        Amount(value=Decimal("5000"), asset="USDT"),
    )
    assert signals.account_uids == ("12345678", "87654321")
    assert signals.order_ids == ("202401011234", "987654321")


def test_lookalikes_are_not_signals() -> None:
    rng = random.Random(8)
    bad_tron = b58check(b"\x41" + rng.randbytes(20))
    bad_tron = bad_tron[:-1] + ("2" if bad_tron[-1] != "2" else "3")
    bad_bech32 = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdp"
    solana_shape = b58(rng.randbytes(32))
    text = (
        f"send to {bad_tron} or {bad_bech32} or {solana_shape}; "
        "2 days ago I paid 100 dollars, order was filled, uid unknown"
    )

    signals = signals_of(text)

    assert signals.addresses == ()
    assert signals.amounts == ()
    assert signals.order_ids == ()
    assert signals.account_uids == ()


def test_solana_address_needs_a_solana_cue() -> None:
    address = b58(random.Random(9).randbytes(32))

    with_cue = signals_of(f"my Solana wallet {address}")
    without = signals_of(f"my wallet {address}")

    assert with_cue.addresses == (WalletAddress(chain="sol", address=address),)
    assert without.addresses == ()


# --- policy file -------------------------------------------------------------------------


def _broken(tmp_path: Path, mutate: object) -> Path:
    data = yaml.safe_load(default_rules_path().read_text(encoding="utf-8"))
    assert callable(mutate)
    mutate(data)
    path = tmp_path / "classify.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_the_policy_names_every_urgent_category() -> None:
    policy: ClassifyPolicy = load_rules(default_rules_path())

    assert set(policy.urgent.categories) == {"stolen_funds", "account_takeover", "secret_exposed"}
    assert all(0 < policy.urgent.threshold_of(c) < 0.5 for c in policy.urgent.categories)
    assert policy.min_accuracy >= 0.85


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda d: d["urgent"].update(categories=["money"]), id="unknown-category"),
        pytest.param(lambda d: d["model"].update(ngram_range=[4, 1]), id="bad-ngram-range"),
        pytest.param(
            lambda d: d["model"].update(word_ngram_range=[0, 2]), id="bad-word-ngram-range"
        ),
        pytest.param(
            lambda d: d["urgent"]["thresholds"].update(trading=0.1), id="threshold-not-urgent"
        ),
        pytest.param(
            lambda d: d["urgent"]["thresholds"].update(stolen_funds=0), id="threshold-zero"
        ),
        pytest.param(lambda d: d.update(min_accuracy=1.5), id="accuracy-over-one"),
        pytest.param(lambda d: d.update(min_scor=1), id="typo-in-key"),
        pytest.param(lambda d: d["signals"].pop("assets"), id="missing-section"),
        pytest.param(lambda d: d.update(version=1), id="old-version"),
    ],
)
def test_broken_policy_fails_loudly(tmp_path: Path, mutate: object) -> None:
    path = _broken(tmp_path, mutate)

    with pytest.raises(RulesError, match=r"classify\.yaml"):
        load_rules(path)


def test_unreadable_policy_fails_loudly(tmp_path: Path) -> None:
    bad = tmp_path / "classify.yaml"
    bad.write_text("version: [1\n", encoding="utf-8")

    with pytest.raises(RulesError):
        load_rules(bad)
    with pytest.raises(RulesError):
        load_rules(tmp_path / "missing.yaml")


# --- what the model reads -----------------------------------------------------------------


def test_words_after_an_english_negation_are_marked() -> None:
    assert mark_negation("not hacked, i just forgot") == "not neg_hacked, neg_i neg_just forgot"
    assert mark_negation("it wasn’t me") == "it wasn’t neg_me"
    assert mark_negation("i was hacked") == "i was hacked"


def test_chinese_is_read_as_character_bigrams_with_negation_marked() -> None:
    # "没收到" is not "收到"; 别人 (someone else) is no negation.
    assert word_text("充值没收到钱") == "充值 值没 没收 neg_收到 neg_到钱"
    assert word_text("不是我 提的") == "不是 neg_是我 提的"
    assert word_text("别人登录了") == "别人 人登 登录 录了"
    assert word_text("我的usdt没了") == "我的 usdt 没了"
    assert word_text("not me") == "not neg_me"
    # The model has Chinese words: a deposit "没收到" and a withdrawal "提现" differ in them.
    assert {"没收", "neg_收到"} <= set(text_model().word_vocabulary)


def test_the_model_reads_the_kind_of_a_redaction_never_the_secret() -> None:
    with_marker = redaction_features(["my pw [REDACTED:password] and code [REDACTED:otp_code]"])
    without = redaction_features(["my pw and code"])

    kinds = dict(zip(REDACTION_KINDS, with_marker.toarray()[0], strict=True))
    assert kinds == {"seed_phrase": 0, "private_key": 0, "password": 1, "otp_code": 1}
    assert without.nnz == 0
    assert not any("REDACTED" in gram for gram in text_model().vocabulary)
    assert not any("redacted" in word for word in text_model().word_vocabulary)


# --- evaluation ---------------------------------------------------------------------------


def example(text: str, category: Category) -> Example:
    return Example(text=text, language="en", category=category, style="chat")


def test_evaluation_applies_the_redaction_rule_as_ingest_does() -> None:
    pasted = example("fix my login, pw [REDACTED:password]", "secret_exposed")
    probabilities = np.array([row(login_2fa=0.99)])

    evaluation = evaluate_probabilities(probabilities, CATEGORIES, [pasted], classify_policy())

    assert evaluation.confusion == {("secret_exposed", "secret_exposed"): 1}


def test_thresholds_chosen_by_cross_validation_catch_the_most_p1_within_the_budget() -> None:
    policy = classify_policy()
    # Five thefts the model mostly misses (stolen_funds 0.3 … 0.02) and five questions
    # that look a little like theft (0.035): 0.02 routes every theft P1 and every question
    # too; 0.04 routes four thefts of five and no question.
    thefts = [0.3, 0.2, 0.1, 0.04, 0.02]
    examples = [example(f"theft {i}", "stolen_funds") for i in range(5)]
    examples += [example(f"question {i}", "general") for i in range(5)]
    rows = [row(general=1 - p, stolen_funds=p) for p in thefts] + [
        row(general=0.965, stolen_funds=0.035) for _ in range(5)
    ]
    probabilities = np.array(rows)

    every = choose_thresholds(probabilities, examples, policy, target=1.0, budget=1.0)
    most = choose_thresholds(probabilities, examples, policy, target=0.8, budget=1.0)
    within = choose_thresholds(probabilities, examples, policy, target=0.8, budget=0.1)

    assert every is not None and every.thresholds["stolen_funds"] == 0.02
    assert every.evaluation.routed_urgent("stolen_funds") == 1.0
    assert every.evaluation.false_alarms == 1.0
    # Safety first: with the budget to spare, the last theft is caught (at the price of
    # the five questions); within a 10 % budget it cannot be.
    assert most is not None and most.thresholds["stolen_funds"] == 0.02
    assert most.evaluation.urgent_demoted == 0
    assert within is not None and within.thresholds["stolen_funds"] == 0.04
    assert within.evaluation.routed_urgent("stolen_funds") == 0.8
    assert (within.evaluation.urgent_demoted, within.evaluation.false_alarms) == (1, 0.0)
    assert choose_thresholds(probabilities, examples, policy, target=1.0, budget=0.1) is None
    # A threshold raises a priority, never changes a category: accuracy is the model's.
    assert every.evaluation.accuracy == within.evaluation.accuracy == 0.5
    assert choose_thresholds(probabilities, examples, policy, 1.0, grid=(0.5,)) is None


def tiny_corpus() -> list[Example]:
    rng = random.Random(3)
    words = {c: [f"{c}{i}" for i in range(6)] for c in CATEGORIES}
    return [
        example(" ".join(rng.choice(words[c]) for _ in range(4)) + f" filler {n}", c)
        for c in CATEGORIES
        for n in range(12)
    ]


def test_the_stacked_models_are_saved_as_one_linear_model() -> None:
    examples = tiny_corpus()
    policy = classify_policy()
    model, cross_validated = fit_cross_validated(examples, policy)
    again, _ = fit_cross_validated(examples, policy)
    # The same pipeline by hand: SVM and ridge scores, a logistic regression on them.
    texts = [e.text for e in examples]
    labels = np.array([CATEGORIES.index(e.category) for e in examples])
    chars, words = model._vectorizers
    x = features(texts, chars, words, model.max_chars)
    settings = policy.model
    svm = LinearSVC(C=settings.c, max_iter=5000, random_state=settings.seed).fit(x, labels)
    ridge = RidgeClassifier(alpha=settings.ridge_alpha).fit(x, labels)
    scores = np.hstack([svm.decision_function(x), ridge.decision_function(x)])
    stacker = LogisticRegression(C=settings.stack_c, max_iter=5000).fit(
        cross_validated_scores(examples, policy), labels
    )

    assert np.allclose(model.probabilities(texts), stacker.predict_proba(scores), atol=1e-4)
    assert np.array_equal(model.coef, again.coef)  # deterministic: same corpus, same model
    assert cross_validated.shape == (len(examples), len(CATEGORIES))
    assert np.allclose(cross_validated.sum(axis=1), 1.0)


def cross_validated_scores(examples: list[Example], policy: ClassifyPolicy) -> np.ndarray:
    """The base models' 5-fold cross-validated scores, as training computes them."""
    settings = policy.model
    texts = [e.text for e in examples]
    labels = np.array([CATEGORIES.index(e.category) for e in examples])
    normalised = [normalise(t, settings.max_chars) for t in texts]
    chars = make_vectorizer(settings.ngram_range).fit(normalised)
    words = make_word_vectorizer(settings.word_ngram_range).fit([word_text(t) for t in normalised])
    x = features(texts, chars, words, settings.max_chars)
    scores = np.zeros((len(examples), 2 * len(CATEGORIES)))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=settings.seed)
    for train, test in folds.split(np.zeros(len(labels)), labels):
        svm = LinearSVC(C=settings.c, max_iter=5000, random_state=settings.seed)
        ridge = RidgeClassifier(alpha=settings.ridge_alpha)
        scores[test] = np.hstack(
            [
                svm.fit(x[train], labels[train]).decision_function(x[test]),
                ridge.fit(x[train], labels[train]).decision_function(x[test]),
            ]
        )
    return scores
