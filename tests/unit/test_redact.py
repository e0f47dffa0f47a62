"""Secrets never leave redact(): seed phrases, private keys, passwords, one-time codes."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from mnemonic import Mnemonic

from services.ingest.redact import MARKERS, checksum_ok, redact
from shared.contracts.messages import Redaction
from tests.support.base58 import b58check

SEED = MARKERS["seed_phrase"]
KEY = MARKERS["private_key"]
PASSWORD = MARKERS["password"]
OTP = MARKERS["otp_code"]

LANGUAGES = sorted(Mnemonic.list_languages())


def phrase_words(language: str, entropy: bytes) -> list[str]:
    mnemo = Mnemonic(language)
    return mnemo.to_mnemonic(entropy).split(mnemo.delimiter)


def entropy(seed: int, words: int = 12) -> bytes:
    return random.Random(seed).randbytes(words * 4 // 3)


def wif(key: bytes, *, compressed: bool) -> str:
    return b58check(b"\x80" + key + (b"\x01" if compressed else b""))


def xprv(chain_code: bytes, key: bytes) -> str:
    # version, depth, parent fingerprint, child number, chain code, 0x00 + key
    return b58check(bytes.fromhex("0488ade4") + b"\0" * 9 + chain_code + b"\0" + key)


def seed_count(redactions: tuple[Redaction, ...]) -> int:
    return sum(r.count for r in redactions if r.kind == "seed_phrase")


# --- seed phrases ----------------------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("size", [12, 24])
def test_seed_phrase_in_every_wordlist_is_redacted(language: str, size: int) -> None:
    words = phrase_words(language, entropy(size, size))
    phrase = (Mnemonic(language).delimiter).join(words)

    text, redactions = redact(f"Please help, my wallet words: {phrase} thanks")

    assert text == f"Please help, my wallet words: {SEED} thanks"
    assert redactions == (Redaction(kind="seed_phrase", count=1),)


@pytest.mark.parametrize("language", ["english", "french", "spanish", "korean", "czech"])
@pytest.mark.parametrize(
    "layout",
    [
        pytest.param(lambda ws: " ".join(f"{i}. {w}" for i, w in enumerate(ws, 1)), id="numbered"),
        pytest.param(lambda ws: "\n".join(f"{i}) {w}" for i, w in enumerate(ws, 1)), id="lines"),
        pytest.param(lambda ws: ", ".join(ws), id="commas"),
        pytest.param(lambda ws: ",".join(ws), id="tight-commas"),
        pytest.param(lambda ws: "\n".join(ws), id="newlines"),
        pytest.param(lambda ws: " ".join(w.upper() for w in ws), id="upper"),
        pytest.param(lambda ws: " ".join(w.capitalize() for w in ws), id="capitalized"),
    ],
)
def test_seed_phrase_layouts_are_redacted(language: str, layout: object) -> None:
    words = phrase_words(language, entropy(7, 24))
    assert callable(layout)
    rendered = layout(words)

    text, redactions = redact(f"recovery:\n{rendered}\nwhat now?")

    assert seed_count(redactions) == 1
    assert all(word.upper() not in text.upper() for word in words if len(word) > 4)
    assert text.endswith(f"{SEED}\nwhat now?")


def test_numbering_is_redacted_with_the_words() -> None:
    words = phrase_words("english", entropy(3))
    numbered = " ".join(f"{i}. {w}" for i, w in enumerate(words, 1))

    text, _ = redact(numbered)

    assert text == SEED


def test_russian_list_word_with_replacement_characters_matches() -> None:
    # mnemonic's Russian list ships one word containing U+FFFD; phrases may contain it
    wordlist = Mnemonic("russian").wordlist
    odd = next(i for i, w in enumerate(wordlist) if "\ufffd" in w)
    indices = [odd, *range(100, 110)]
    last = next(i for i in range(2048) if checksum_ok([*indices, i]))
    phrase = " ".join(wordlist[i] for i in [*indices, last])

    assert redact(f"фраза: {phrase}") == (
        f"фраза: {SEED}",
        (Redaction(kind="seed_phrase", count=1),),
    )


def test_accent_free_spelling_still_matches() -> None:
    # Spanish/French customers often type without accents
    words = phrase_words("spanish", entropy(11))
    plain = " ".join(w.translate(str.maketrans("áéíóúñ", "aeioun")) for w in words)

    _, redactions = redact(plain)

    assert seed_count(redactions) == 1


@pytest.mark.parametrize("language", ["chinese_simplified", "chinese_traditional"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_chinese_phrase_with_and_without_spaces(language: str, seed: int) -> None:
    words = phrase_words(language, entropy(seed))
    spaced, tight = " ".join(words), "".join(words)

    for text_in, expected in [
        (spaced, SEED),
        (tight, SEED),
        (f"助记词：{tight}", f"助记词：{SEED}"),
        (f"我的助记词是{tight}请帮我看看", f"我的助记词是{SEED}请帮我看看"),
        (f"钱包导出的\n{tight}\n谢谢", f"钱包导出的\n{SEED}\n谢谢"),
    ]:
        text, redactions = redact(text_in)
        assert text == expected, text_in
        assert seed_count(redactions) == 1


def test_two_phrases_are_counted() -> None:
    first = " ".join(phrase_words("english", entropy(21)))
    second = " ".join(phrase_words("italian", entropy(22, 24)))

    text, redactions = redact(f"old wallet: {first}\n\nnew wallet: {second}")

    assert text == f"old wallet: {SEED}\n\nnew wallet: {SEED}"
    assert redactions == (Redaction(kind="seed_phrase", count=2),)


def test_checksum_matches_mnemonic_check() -> None:
    mnemo = Mnemonic("english")
    index = {w: i for i, w in enumerate(mnemo.wordlist)}
    rng = random.Random(5)
    valid = 0
    for _ in range(2000):
        words = rng.choices(mnemo.wordlist, k=rng.choice([12, 15, 18, 21, 24]))
        expected = mnemo.check(" ".join(words))
        assert checksum_ok([index[w] for w in words]) is expected
        valid += expected
    assert valid > 0  # the sample exercised both outcomes


# Near misses: a checksum failure is still a leak when the text is shaped like a phrase.


def broken(words: list[str]) -> list[str]:
    """The same phrase with its last word swapped so that the checksum fails."""
    mnemo = Mnemonic("english")
    for candidate in mnemo.wordlist:
        attempt = [*words[:-1], candidate]
        if candidate not in words and not mnemo.check(" ".join(attempt)):
            return attempt
    raise AssertionError("unreachable")


def test_numbered_phrase_failing_checksum_is_redacted() -> None:
    words = broken(phrase_words("english", entropy(8)))
    numbered = "\n".join(f"{i}. {w}" for i, w in enumerate(words, 1))

    text, redactions = redact(f"Hi, here are my words\n{numbered}\nDid I write them down right")

    assert seed_count(redactions) == 1
    assert words[5] not in text


def test_phrase_with_one_typo_is_redacted() -> None:
    words = phrase_words("english", entropy(9))
    words[6] = words[6][:-1] + ("x" if words[6][-1] != "x" else "y")  # one wrong letter

    text, redactions = redact(f"my seed phrase is {' '.join(words)}")

    assert seed_count(redactions) == 1
    assert words[6] not in text
    assert words[0] not in text


def test_phrase_with_a_missing_word_is_redacted_when_numbered() -> None:
    words = phrase_words("english", entropy(10))
    numbered = " ".join(f"{i}. {w}" for i, w in enumerate(words, 1) if i != 7)

    text, redactions = redact(numbered)

    assert seed_count(redactions) == 1
    assert words[0] not in text


def test_unnumbered_phrase_failing_checksum_alone_on_its_line_is_redacted() -> None:
    words = broken(phrase_words("english", entropy(12)))

    text, redactions = redact(f"Hello,\n{' '.join(words)}\nplease check")

    assert seed_count(redactions) == 1
    assert text == f"Hello,\n{SEED}\nplease check"


ENGLISH_PROSE = [
    "Can you please help, someone will transfer all balance again today, still no answer.",
    "can you please help someone will transfer all balance again today still waiting",
    "I have been waiting for my deposit for three hours and the balance still shows zero, "
    "can you check the network fee and the address?",
    "Please help me, I cannot access my account after the update and the phone code never arrives.",
    "Hello team, what is the minimum amount to withdraw, and how much is the fee for an "
    "ERC20 transfer?",
    "My wallet address is correct but the order was cancelled again and the balance did "
    "not change.",
    "Someone else has access to my account, they changed the email, the phone number and "
    "the 2FA, please freeze it now!",
    "I just want to know when the market will open again because my limit order is still "
    "pending since last night.",
    "Thank you for your help yesterday, the transfer arrived and everything is fine now.",
    "I wrote my seed phrase on paper and kept it in a safe, nobody else has seen it, but my "
    "coins are gone.",
    "FALSE FALSE TRUE FALSE TRUE TRUE FALSE FALSE TRUE TRUE FALSE TRUE FALSE FALSE TRUE",
]

CHINESE_PROSE = [
    "您好，我的账户昨天晚上被盗了，里面的USDT全部被人转走了，我根本没有操作过提现，请你们马上帮我冻结账户。",
    "我从来没有泄露过助记词，也没有点过任何奇怪的链接，但是今天早上登录的时候发现资产全部没有了。",
    "我从来没有泄露过助记词也没有点过任何奇怪的链接但是今天早上登录的时候发现资产全部没有了",
    "充值已经过去三个小时了还没有到账，交易哈希我已经发给你们了，区块浏览器上显示已经确认成功。",
    "提现一直在审核中已经两天了客服也不回复请问到底什么时候可以到账我需要这笔钱支付房租",
    "我的谷歌验证器丢失了，手机也换了，现在无法登录账户，请问怎么重置二次验证？",
    "合约交易的手续费为什么这么高？我昨天开了一个多单，平仓以后发现扣了很多钱。",
]


@pytest.mark.parametrize("sentence", ENGLISH_PROSE + CHINESE_PROSE)
def test_prose_made_of_wordlist_words_is_not_flagged(sentence: str) -> None:
    assert redact(sentence) == (sentence, ())


def test_a_dozen_wordlist_words_in_prose_really_are_all_wordlist_words() -> None:
    # Guards the prose test above: it must exercise a 12-word run of list words.
    wordlist = set(Mnemonic("english").wordlist)
    words = ENGLISH_PROSE[1].split()
    assert sum(w in wordlist for w in words) >= 12


# --- private keys ----------------------------------------------------------------------

HEX = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"


@pytest.mark.parametrize(
    "template",
    [
        "private key: {h}",
        "my privkey is 0x{h}",
        "Private Key\n{h}",
        "here is the secret {h} please restore",
        "私钥 {h}",
        "我的私钥是0x{h}请帮忙",
        "{h} <- this is my private key",
    ],
)
def test_hex_private_key_is_redacted(template: str) -> None:
    text, redactions = redact(template.format(h=HEX))

    assert HEX not in text
    assert KEY in text
    assert redactions == (Redaction(kind="private_key", count=1),)


@pytest.mark.parametrize(
    "template",
    [
        "txid: {h}",
        "tx hash 0x{h} still not credited",
        "交易哈希：0x{h}",
        "充值没到账 {h}",
        "https://etherscan.io/tx/0x{h}",
        "{h}",  # no cue at all: hashes are what customers paste
    ],
)
def test_transaction_hash_is_kept(template: str) -> None:
    original = template.format(h=HEX)

    assert redact(original) == (original, ())


def test_nearest_cue_decides_between_hash_and_key() -> None:
    other = "9f2c4d3e1b0a99887766554433221100ffeeddccbbaa99887766554433221100"

    text, redactions = redact(f"txid {other} and my private key {HEX}")

    assert text == f"txid {other} and my private key {KEY}"
    assert redactions == (Redaction(kind="private_key", count=1),)


@pytest.mark.parametrize("compressed", [True, False])
def test_wif_key_is_redacted(compressed: bool) -> None:
    key = wif(random.Random(1).randbytes(32), compressed=compressed)
    assert key[0] in ("K", "L") if compressed else key[0] == "5"

    text, redactions = redact(f"imported key {key} into electrum")

    assert text == f"imported key {KEY} into electrum"
    assert redactions == (Redaction(kind="private_key", count=1),)


def test_wif_shape_with_a_bad_checksum_is_kept() -> None:
    key = wif(random.Random(2).randbytes(32), compressed=True)
    corrupted = key[:-1] + ("2" if key[-1] != "2" else "3")

    assert redact(f"reference {corrupted}") == (f"reference {corrupted}", ())


def test_extended_private_key_is_redacted_even_mistyped() -> None:
    rng = random.Random(3)
    key = xprv(rng.randbytes(32), rng.randbytes(32))
    assert key.startswith("xprv")
    mistyped = key[:50] + ("A" if key[50] != "A" else "B") + key[51:]

    for candidate in (key, mistyped):
        text, redactions = redact(f"my wallet export: {candidate}")
        assert text == f"my wallet export: {KEY}"
        assert redactions == (Redaction(kind="private_key", count=1),)


def test_extended_public_key_is_kept() -> None:
    rng = random.Random(4)
    xpub = b58check(
        bytes.fromhex("0488b21e") + b"\0" * 9 + rng.randbytes(32) + b"\x02" + rng.randbytes(32)
    )
    assert xpub.startswith("xpub")

    assert redact(xpub) == (xpub, ())


# --- passwords and one-time codes ------------------------------------------------------


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        ("password: hunter2", f"password: {PASSWORD}"),
        ("my password is Hunter22.", f"my password is {PASSWORD}."),
        ("pwd=S3cr3t!x please", f"pwd={PASSWORD} please"),
        ("The password was 'correct horse' I think", f"The password was {PASSWORD} I think"),
        ("Password: Tr0ub4dor&3\nthanks", f"Password: {PASSWORD}\nthanks"),
        ("密码是abc123", f"密码是{PASSWORD}"),
        ("密码：Abc@2024，请帮我登录", f"密码：{PASSWORD}，请帮我登录"),
        ("登录密码为qwe123456请查收", f"登录密码为{PASSWORD}请查收"),
    ],
)
def test_password_is_redacted(original: str, expected: str) -> None:
    assert redact(original) == (expected, (Redaction(kind="password", count=1),))


@pytest.mark.parametrize(
    "sentence",
    [
        "my password is wrong",
        "my password was changed by someone",
        "the password is not working",
        "Password reset email never arrived",
        "password: reset",
        "密码是错的",
        "密码被改了",
    ],
)
def test_password_talk_without_a_password_is_kept(sentence: str) -> None:
    assert redact(sentence) == (sentence, ())


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        ("2FA code 123456", f"2FA code {OTP}"),
        ("Google Authenticator code is 654321", f"Google Authenticator code is {OTP}"),
        ("my current 2fa code: 123 456", f"my current 2fa code: {OTP}"),
        ("the verification code is 8812", f"the verification code is {OTP}"),
        ("验证码 123456", f"验证码 {OTP}"),
        ("谷歌验证码是778899，快点", f"谷歌验证码是{OTP}，快点"),
        ("654321 is my 2FA code", f"{OTP} is my 2FA code"),
    ],
)
def test_one_time_code_is_redacted(original: str, expected: str) -> None:
    assert redact(original) == (expected, (Redaction(kind="otp_code", count=1),))


@pytest.mark.parametrize(
    "sentence",
    [
        "I enabled 2FA in 2024 and order 123456789 is stuck",
        "2FA problem, order 12345678",
        "UID 12345678 cannot pass 2FA",
    ],
)
def test_numbers_near_2fa_that_are_not_codes_are_kept(sentence: str) -> None:
    assert redact(sentence) == (sentence, ())


def test_every_kind_in_one_message() -> None:
    words = " ".join(phrase_words("english", entropy(30)))
    message = f"seed: {words}\nprivate key {HEX}\npassword: Abc12345\n2FA code 135790"

    text, redactions = redact(message)

    assert text == f"seed: {SEED}\nprivate key {KEY}\npassword: {PASSWORD}\n2FA code {OTP}"
    assert redactions == tuple(
        Redaction(kind=k, count=1) for k in ("seed_phrase", "private_key", "password", "otp_code")
    )


def test_long_chinese_message_is_fast() -> None:
    message = "".join(CHINESE_PROSE) * 40  # ~8k characters of Han text

    started = time.perf_counter()
    redact(message)

    assert time.perf_counter() - started < 0.5


# --- properties ------------------------------------------------------------------------

# Surroundings without letters, so that a word of the secret can only come from the secret.
filler = st.text(
    alphabet=st.characters(exclude_categories=("L", "M", "Cs")), max_size=30
) | st.sampled_from(["please help", "我的助记词是", "seed:", "救命！", "thanks 谢谢"])
separator = st.sampled_from([" ", "\n", ": ", "\t", " , "])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    language=st.sampled_from([lang for lang in LANGUAGES if not lang.startswith("chinese")]),
    raw=st.binary(min_size=32, max_size=32),
    size=st.sampled_from([12, 15, 18, 21, 24]),
    before=filler,
    after=filler,
    gap=separator,
)
def test_seed_phrase_never_survives(
    language: str, raw: bytes, size: int, before: str, after: str, gap: str
) -> None:
    words = phrase_words(language, raw[: size * 4 // 3])
    # Heavily repeated word lists ("abandon abandon ... about") are deliberately not
    # treated as phrases: tables of repeated words would be.
    assume(len(set(words)) >= len(words) - 2)
    phrase = Mnemonic(language).delimiter.join(words)

    text, redactions = redact(f"{before}{gap}{phrase}{gap}{after}")

    assert phrase not in text
    assert Mnemonic(language).delimiter.join(words[:3]) not in text
    assert seed_count(redactions) >= 1


@settings(max_examples=60, deadline=None)
@given(
    secret=st.sampled_from(["hex", "wif", "xprv", "password", "otp"]),
    raw=st.binary(min_size=32, max_size=32),
    digits=st.integers(100000, 999999),
    before=filler,
    after=filler,
)
def test_keys_passwords_and_codes_never_survive(
    secret: str, raw: bytes, digits: int, before: str, after: str
) -> None:
    value, carrier = {
        "hex": (raw.hex(), "private key: {}"),
        "wif": (wif(raw, compressed=True), "key {}"),
        "xprv": (xprv(raw, raw), "{}"),
        "password": (f"Pw{raw.hex()[:10]}", "password: {}"),
        "otp": (str(digits), "2FA code {}"),
    }[secret]
    assume(value not in before + after)

    text, redactions = redact(f"{before} {carrier.format(value)} {after}")

    assert value not in text
    assert redactions


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_random_text_is_idempotent_and_never_raises(text_in: str) -> None:
    once, _ = redact(text_in)

    assert redact(once) == (once, ())


@settings(max_examples=60, deadline=None)
@given(
    raw=st.binary(min_size=16, max_size=16),
    noise=st.text(max_size=80),
    template=st.sampled_from(
        [
            "{noise} {phrase} {noise}",
            "private key {hex} {noise}",
            "{noise}password: {noise}",
            "my password is {noise}",
            "验证码{noise}",
            "{noise}\n{numbered}",
        ]
    ),
)
def test_redacting_twice_changes_nothing(raw: bytes, noise: str, template: str) -> None:
    words = phrase_words("english", raw)
    text_in = template.format(
        noise=noise,
        phrase=" ".join(words),
        hex=raw.hex() * 2,
        numbered=" ".join(f"{i}. {w}" for i, w in enumerate(words, 1)),
    )

    once, _ = redact(text_in)

    assert redact(once) == (once, ())
