"""A realistic multichannel load: Chinese and English, every category, a size mix, a few
attachments. Every payload is in its provider's own format, as adapters would publish it.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from services.ingest.model import ParserConfig
from services.ingest.pipeline import Prepared, prepare
from shared.contracts.common import Channel
from shared.topics import INBOUND_BY_CHANNEL

TEXTS: tuple[tuple[str, str], ...] = (
    ("en", "Someone withdrew all my USDT and I did not make this withdrawal, freeze it please"),
    ("zh", "我的账户被盗了，资产被转走，请马上帮我冻结账户"),
    ("en", "My account was hacked and the 2FA was changed, not by me"),
    ("zh", "未授权提现！我没有操作过提现"),
    (
        "en",
        "My BTC deposit has not arrived after 6 confirmations, tx "
        "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b",
    ),
    ("zh", "充值未到账，已经两个小时了，金额 500 USDT"),
    ("en", "My withdrawal of 0.5 ETH has been stuck in review for a day"),
    ("zh", "提现一直在审核中，怎么回事"),
    ("en", "I lost my 2FA device and cannot log in"),
    ("zh", "无法登录，验证码收不到"),
    ("en", "My KYC verification was rejected, why?"),
    ("en", "I got a DM from 'support' asking for my seed phrase, is this a scam?"),
    ("en", "Why was my limit order filled at a worse price? order 99812345"),
    ("zh", "请问合约交易的手续费是多少？"),
    ("en", "How do I change the language of the app?"),
    ("zh", "你们的客服几点上班？"),
)
FILLER_EN = " More details: I have been a customer for years and this never happened before."
FILLER_ZH = "补充说明：我已经使用你们的平台很多年了，以前从来没有遇到过这种情况。"


@dataclass(frozen=True)
class Payload:
    channel: Channel
    provider: str
    raw: bytes
    key: bytes
    message_id: str

    @property
    def topic(self) -> str:
        return INBOUND_BY_CHANNEL[self.channel]


def _text(rng: random.Random) -> tuple[str, str]:
    lang, text = rng.choice(TEXTS)
    # Size mix: most messages short, some long (emails especially).
    repeat = rng.choices([0, 1, 5, 30], weights=[60, 25, 12, 3])[0]
    return lang, text + (FILLER_ZH if lang == "zh" else FILLER_EN) * repeat


def _email(n: int, run: str, rng: random.Random) -> tuple[bytes, bytes]:
    lang, text = _text(rng)
    msg = EmailMessage()
    msg["From"] = f"Customer {n} <c{n}.{run}@example.com>"
    msg["To"] = "support@exchange.example"
    msg["Subject"] = "账户问题" if lang == "zh" else "Problem with my account"
    msg["Message-ID"] = make_msgid(idstring=f"{run}{n}", domain="example.com")
    msg["Date"] = format_datetime(__import__("datetime").datetime.now(__import__("datetime").UTC))
    msg.set_content(text, charset="utf-8")
    if rng.random() < 0.1:  # a screenshot
        msg.add_attachment(
            rng.randbytes(20_000), maintype="image", subtype="png", filename="screenshot.png"
        )
    return bytes(msg), f"{run}-e{n}".encode()


def _telegram(n: int, run: str, rng: random.Random) -> tuple[bytes, bytes]:
    lang, text = _text(rng)
    # Unique per run: a reused chat id would join an earlier run's open ticket.
    chat_id = 10_000_000 + int(hashlib.sha256(run.encode()).hexdigest()[:6], 16) * 100_000 + n
    update = {
        "update_id": n,
        "message": {
            "message_id": n,
            "from": {
                "id": chat_id,
                "is_bot": False,
                "first_name": "C",
                "language_code": "zh-hans" if lang == "zh" else "en",
            },
            "chat": {"id": chat_id, "type": "private"},
            "date": 1_795_000_000 + n,
            "text": text,
        },
    }
    return json.dumps(update, ensure_ascii=False).encode(), f"{run}-t{n}".encode()


def _chat(n: int, run: str, rng: random.Random) -> tuple[bytes, bytes]:
    lang, text = _text(rng)
    body = {
        "session_id": f"{run}-s{n}",
        "message_id": "m1",
        "sent_at": "2026-11-22T12:00:00Z",
        "visitor": {
            "id": f"{run}-v{n}",
            "name": "Visitor",
            "locale": "zh-CN" if lang == "zh" else "en-US",
        },
        "text": text,
    }
    return json.dumps(body, ensure_ascii=False).encode(), f"{run}-s{n}".encode()


def _phone(n: int, run: str, rng: random.Random) -> tuple[bytes, bytes]:
    _, text = _text(rng)
    caller = f"+86{int(hashlib.sha256(run.encode()).hexdigest()[:5], 16) % 10**5:05d}{n:06d}"
    body = {
        "call_id": f"{run}-call{n}",
        "from": caller,
        "to": "+18005550100",
        "started_at": "2026-11-22T12:00:00Z",
        "duration_s": 60,
        "direction": "inbound",
        "ivr_path": ["1"] if rng.random() < 0.3 else ["9"],
        "disposition": "voicemail",
        "transcript": text,
        "callback_number": caller,
    }
    return json.dumps(body, ensure_ascii=False).encode(), f"{run}-p{n}".encode()


MIX: tuple[tuple[Channel, str, object, int], ...] = (
    ("chat", "generic", _chat, 45),
    ("social", "telegram", _telegram, 25),
    ("email", "smtp", _email, 20),
    ("phone", "generic", _phone, 10),
)


def generate(
    count: int,
    run: str,
    seed: int = 7,
    *,
    keep: Callable[[Sequence[Prepared]], Sequence[bool]] | None = None,
    config: ParserConfig | None = None,
) -> list[Payload]:
    """`count` payloads, each a new conversation; message ids known in advance.

    `keep`: which of a batch of parsed messages may be part of the load (e.g. none that
    ingest will classify as P1); the others are drawn again. `config`: ingest's parser
    settings to parse them with (its IVR menus give phone calls their category hint)."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible load, not a secret
    weights = [w for *_, w in MIX]
    config = config or ParserConfig()
    out: list[Payload] = []
    n = 0
    while len(out) < count:
        if n > 20 * count:
            raise ValueError(f"`keep` refused nearly all of {n} messages drawn")
        drawn: list[tuple[Payload, Prepared]] = []
        for _ in range(count - len(out)):
            channel, provider, make, _ = rng.choices(MIX, weights=weights)[0]
            raw, key = make(n, run, rng)  # type: ignore[operator]
            n += 1
            [prepared] = [
                p for p in prepare(channel, provider, raw, config) if isinstance(p, Prepared)
            ]
            drawn.append((Payload(channel, provider, raw, key, prepared.message_id), prepared))
        kept = keep([p for _, p in drawn]) if keep else [True] * len(drawn)
        out += [payload for (payload, _), ok in zip(drawn, kept, strict=True) if ok]
    return out
