"""Classification by policy/classify.yaml: categories, negation, how-to questions, signals."""

from __future__ import annotations

import hashlib
import random
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from services.ingest.classify import (
    ClassifyRules,
    RulesError,
    classify,
    default_rules_path,
    load_rules,
)
from services.ingest.redact import redact
from shared.contracts.common import CATEGORIES
from shared.contracts.messages import Amount, Redaction, WalletAddress

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


@pytest.fixture(scope="module")
def rules() -> ClassifyRules:
    return load_rules(default_rules_path())


def b58(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    encoded = ""
    while number:
        number, digit = divmod(number, 58)
        encoded = _B58[digit] + encoded
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + encoded


def b58check(payload: bytes) -> str:
    return b58(payload + hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4])


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


@pytest.mark.parametrize("text", STOLEN_EN)
def test_stolen_funds_in_english(text: str, rules: ClassifyRules) -> None:
    result = classify(text, None, "en", rules)

    assert result.category == "stolen_funds"
    assert any(r.startswith("matched en:stolen_funds") for r in result.reasons)


@pytest.mark.parametrize("text", STOLEN_ZH)
def test_stolen_funds_in_chinese(text: str, rules: ClassifyRules) -> None:
    result = classify(text, None, "zh", rules)

    assert result.category == "stolen_funds"
    assert any(r.startswith("matched zh:stolen_funds") for r in result.reasons)


@pytest.mark.parametrize(
    ("text", "language", "category"),
    [
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
    ],
)
def test_categories(text: str, language: str, category: str, rules: ClassifyRules) -> None:
    assert classify(text, None, language, rules).category == category


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


@pytest.mark.parametrize(("text", "language"), HOWTO)
def test_how_to_questions_are_not_money_problems(
    text: str, language: str, rules: ClassifyRules
) -> None:
    result = classify(text, None, language, rules)

    assert result.category not in ("withdrawal", "deposit")
    assert any(r.startswith("question: how-to") for r in result.reasons)


def test_how_to_reason_names_where_it_went(rules: ClassifyRules) -> None:
    result = classify("how do I withdraw to my bank?", None, "en", rules)

    assert result.category == "general"
    assert "question: how-to withdrawal → general" in result.reasons


def test_how_to_about_trading_falls_to_trading(rules: ClassifyRules) -> None:
    result = classify("How do I withdraw from futures margin to spot?", None, "en", rules)

    assert result.category == "trading"


@pytest.mark.parametrize(
    ("text", "language", "not_category", "reason"),
    [
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
    ],
)
def test_negated_risk_is_dropped(
    text: str, language: str, not_category: str, reason: str | None, rules: ClassifyRules
) -> None:
    result = classify(text, None, language, rules)

    assert result.category != not_category
    assert result.category == "login_2fa" or "withdrawal" in result.category
    if reason:
        assert reason in result.reasons


@pytest.mark.parametrize(
    ("text", "language", "category"),
    [
        # these look negated but are the complaint itself
        ("I didn't authorize this transfer", "en", "stolen_funds"),
        ("未授权提现，请冻结", "zh", "stolen_funds"),
        ("充值未到账", "zh", "deposit"),
        ("is my account hacked? I don't know who logged in", "en", "account_takeover"),
        ("我的账户是不是被盗了", "zh", "stolen_funds"),
        ("I have not received my withdrawal", "en", "withdrawal"),
    ],
)
def test_negation_look_alikes_keep_their_category(
    text: str, language: str, category: str, rules: ClassifyRules
) -> None:
    assert classify(text, None, language, rules).category == category


@pytest.mark.parametrize("kind", ["seed_phrase", "private_key", "password"])
def test_secret_redaction_wins_over_everything(kind: str, rules: ClassifyRules) -> None:
    result = classify(
        "someone withdrew all my USDT [REDACTED]",
        None,
        "en",
        rules,
        redactions=(Redaction(kind=kind, count=1),),  # type: ignore[arg-type]
    )

    assert result.category == "secret_exposed"
    assert f"redaction: {kind} → secret_exposed" in result.reasons


def test_one_time_code_alone_is_not_an_exposed_secret(rules: ClassifyRules) -> None:
    text, redactions = redact("I can't log in, 2FA code 123456 is rejected")

    result = classify(text, None, "en", rules, redactions=redactions)

    assert redactions == (Redaction(kind="otp_code", count=1),)
    assert result.category == "login_2fa"


def test_pasted_seed_phrase_end_to_end(rules: ClassifyRules) -> None:
    from mnemonic import Mnemonic

    phrase = Mnemonic("english").to_mnemonic(random.Random(1).randbytes(16))
    text, redactions = redact(f"support asked for my words: {phrase}")

    result = classify(text, None, "en", rules, redactions=redactions)

    assert result.category == "secret_exposed"
    assert all(phrase.split()[0] not in r for r in result.reasons)


def test_markers_are_not_read_as_customer_words(rules: ClassifyRules) -> None:
    result = classify("I sent [REDACTED:seed_phrase] to you", None, "en", rules)

    assert result.category == "general"


def test_hint_decides_only_when_text_says_nothing_stronger(rules: ClassifyRules) -> None:
    vague = classify("please call me back", None, "en", rules, category_hint="withdrawal")
    strong = classify("资产被盗", None, "zh", rules, category_hint="trading")
    weaker = classify("my futures order was wrong", None, "en", rules, category_hint="deposit")

    assert vague.category == "withdrawal"
    assert "hint: withdrawal" in vague.reasons
    assert strong.category == "stolen_funds"
    assert weaker.category == "deposit"  # a money problem outranks trading


def test_subject_counts(rules: ClassifyRules) -> None:
    result = classify("please help asap", "Unauthorized withdrawal", "en", rules)

    assert result.category == "stolen_funds"


def test_reasons_are_short_and_quote_rules_not_text(rules: ClassifyRules) -> None:
    text = "Someone withdrew all my USDT from UID 87654321 while I was sleeping " * 5

    result = classify(text, None, "en", rules)

    assert result.reasons
    assert all(len(r) <= 80 for r in result.reasons)
    assert "matched en:stolen_funds 'someone withdrew'" in result.reasons
    assert not any("87654321" in r or "sleeping" in r for r in result.reasons)


def test_no_match_says_so(rules: ClassifyRules) -> None:
    assert classify("hi", None, "en", rules).reasons == ("no rule matched → general",)


# --- signals ---------------------------------------------------------------------------


def test_signals_are_extracted_exactly(rules: ClassifyRules) -> None:
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

    signals = classify(text, None, "en", rules).signals

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


def test_lookalikes_are_not_signals(rules: ClassifyRules) -> None:
    rng = random.Random(8)
    bad_tron = b58check(b"\x41" + rng.randbytes(20))
    bad_tron = bad_tron[:-1] + ("2" if bad_tron[-1] != "2" else "3")
    bad_bech32 = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdp"
    solana_shape = b58(rng.randbytes(32))
    text = (
        f"send to {bad_tron} or {bad_bech32} or {solana_shape}; "
        "2 days ago I paid 100 dollars, order was filled, uid unknown"
    )

    signals = classify(text, None, "en", rules).signals

    assert signals.addresses == ()
    assert signals.amounts == ()
    assert signals.order_ids == ()
    assert signals.account_uids == ()


def test_solana_address_needs_a_solana_cue(rules: ClassifyRules) -> None:
    address = b58(random.Random(9).randbytes(32))

    with_cue = classify(f"my Solana wallet {address}", None, "en", rules).signals
    without = classify(f"my wallet {address}", None, "en", rules).signals

    assert with_cue.addresses == (WalletAddress(chain="sol", address=address),)
    assert without.addresses == ()


# --- rules file ------------------------------------------------------------------------


def test_default_rules_cover_every_category(rules: ClassifyRules) -> None:
    ranked = {c for tier in rules.precedence for c in tier}

    assert default_rules_path().is_file()
    assert ranked == set(CATEGORIES)
    assert {"en", "zh"} <= set(rules.languages)


def _broken(tmp_path: Path, mutate: object) -> Path:
    data = yaml.safe_load(default_rules_path().read_text(encoding="utf-8"))
    assert callable(mutate)
    mutate(data)
    path = tmp_path / "classify.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(
            lambda d: d["languages"]["en"]["categories"]["withdrawal"].append(
                {"regex": "(", "label": "x"}
            ),
            id="bad-regex",
        ),
        pytest.param(
            lambda d: d["languages"]["en"]["categories"].update(money=[{"phrase": "x"}]),
            id="unknown-category",
        ),
        pytest.param(lambda d: d["precedence"].pop(), id="category-missing-from-precedence"),
        pytest.param(
            lambda d: d["languages"]["zh"]["categories"]["kyc"].append({"regex": "KYC"}),
            id="regex-without-label",
        ),
        pytest.param(lambda d: d.update(min_scor=1), id="typo-in-key"),
        pytest.param(lambda d: d["signals"].pop("assets"), id="missing-section"),
    ],
)
def test_broken_rules_fail_loudly(tmp_path: Path, mutate: object) -> None:
    path = _broken(tmp_path, mutate)

    with pytest.raises(RulesError, match=r"classify\.yaml"):
        load_rules(path)


def test_unreadable_rules_fail_loudly(tmp_path: Path) -> None:
    bad = tmp_path / "classify.yaml"
    bad.write_text("version: [1\n", encoding="utf-8")

    with pytest.raises(RulesError):
        load_rules(bad)
    with pytest.raises(RulesError):
        load_rules(tmp_path / "missing.yaml")


def test_a_language_is_a_block_of_data(tmp_path: Path) -> None:
    def add_spanish(data: dict[str, object]) -> None:
        languages = data["languages"]
        assert isinstance(languages, dict)
        languages["es"] = {
            "scope": "words",
            "negation_window": 2,
            "clause_breaks": "[.,;!?]",
            "negations": [r"\bno\b"],
            "categories": {"stolen_funds": [{"phrase": "me robaron", "weight": 3}]},
        }

    rules = load_rules(_broken(tmp_path, add_spanish))

    assert classify("me robaron todo", None, "es", rules).category == "stolen_funds"
    assert classify("no me robaron nada", None, "es", rules).category == "general"
