"""Sample customer traffic for `omniroute dev`, the demo and tests: generic chat JSON."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime

SAMPLES: tuple[tuple[str, str], ...] = (
    ("en", "Someone withdrew all my USDT and I did not make this withdrawal! Please freeze it."),
    ("zh", "我的账户被盗了，资产被转走，请马上帮我冻结账户"),
    ("en", "My BTC deposit has not arrived after 6 confirmations."),
    ("zh", "充值未到账，已经两个小时了"),
    ("en", "I lost my 2FA device and cannot log in."),
    ("en", "What are the trading fees for VIP levels?"),
    ("zh", "请问合约交易的手续费是多少？"),
    ("en", "My withdrawal has been stuck in review for a day."),
)


def chat_message(
    session_id: str,
    message_id: str,
    text: str,
    *,
    locale: str = "en",
    visitor_id: str = "v1",
    email: str | None = None,
) -> bytes:
    visitor: dict[str, str] = {"id": visitor_id, "name": "Sample Visitor", "locale": locale}
    if email:
        visitor["email"] = email
    return json.dumps(
        {
            "session_id": session_id,
            "message_id": message_id,
            "sent_at": datetime.now(UTC).isoformat(),
            "visitor": visitor,
            "text": text,
        },
        ensure_ascii=False,
    ).encode()


def sample_stream(prefix: str = "dev") -> Iterator[bytes]:
    for n in itertools.count(1):
        lang, text = SAMPLES[(n - 1) % len(SAMPLES)]
        yield chat_message(
            f"{prefix}-session-{n}",
            f"{prefix}-msg-{n}",
            text,
            locale="zh-CN" if lang == "zh" else "en-US",
            visitor_id=f"{prefix}-visitor-{n}",
        )
