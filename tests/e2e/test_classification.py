"""Classification through the real ingest service, and agents teaching it (real pipeline).

Messages in every register arrive as the providers send them (signed webhooks); what
ingest publishes on support.messages is read back. Then an agent corrects a queued
ticket's category: the router re-prioritises it, publishes `recategorized`, and ingest
keeps the (redacted) text and the agent's category as a training example that the next
training run takes in.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from omniroute.system import DEV_SECRET, DEV_TOKEN, LocalSystem
from services.ingest.http import SIGNATURE_HEADER, sign
from services.ingest.training import corrections_of, load_corpus, train
from shared.settings import IngestSettings
from shared.topics import MESSAGES, TICKETS
from tests.support.classifier import classify_policy
from tests.support.kafka import read_all
from tests.support.payloads import SHAPES_BY_NAME
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": f"Bearer {DEV_TOKEN}"}

# (shape, text, category): the four real misses first, then one per register.
MESSAGES_SENT = [
    (
        "chat",
        "在吗在吗？？有人把我的USDT转走了！！…提现记录显示是凌晨2点14分提的，地址根本不是我的",
        "stolen_funds",
    ),
    (
        "wechat-voice",
        "喂你好，我昨天晚上充了五百个USDT，到现在还没到账，用的是波场网络…",
        "deposit",
    ),
    ("telegram", "pasword reset emial never shows up. tried like 5 times…", "login_2fa"),
    (
        "chatwoot",
        "我挂了一个 ETH/USDT 的限价买单，价格已经跌破我的挂单价了，为什么我的单子还是没成交？",
        "trading",
    ),
    (
        "email",
        "Hello,\n\nI hope you are well. This morning I noticed 3.2 ETH left my account to an "
        "address I have never seen. I did not request it and I was asleep at the time.\n\n"
        "Please freeze my account.\n\nKind regards,\nPriya\n\n> On Mon, support wrote:\n"
        "> Thank you for contacting us.",
        "stolen_funds",
    ),
    (
        "twilio-transcription",
        "hi um yeah my identity verification got rejected again it says the selfie does not "
        "match my passport can someone call me back",
        "kyc",
    ),
    (
        "x-mention",
        "@exchange_help my BTC withdrawal has been pending for 9 hours?? txid pls",
        "withdrawal",
    ),
    (
        "wechat-text",
        "有人冒充你们客服加我微信，说我的账户异常要交保证金解冻，是骗子吧",
        "scam_report",
    ),
    (
        "call-log",
        "hello someone changed the email on my account and i did not do it please help",
        "account_takeover",
    ),
    ("chat", "帳號登入時一直叫我輸入驗證碼 但簡訊都收不到", "login_2fa"),
]


def post(system: LocalSystem, shape_name: str, n: int, text: str) -> str:
    shape = SHAPES_BY_NAME[shape_name]
    body = shape.build(n, text)
    reply = httpx.post(
        f"{system.url('ingest')}/v1/inbound/{shape.channel}/{shape.provider}",
        content=body,
        headers={SIGNATURE_HEADER: sign(DEV_SECRET, body)},
        timeout=10,
    )
    assert reply.status_code == 202, reply.text
    [message_id] = reply.json()["message_ids"]
    return str(message_id)


def published(system: LocalSystem, topic: str) -> list[dict[str, Any]]:
    import asyncio

    records = asyncio.run(read_all(system.stack.kafka_bootstrap, (topic,)))
    return [json.loads(r.value) for r in records]


def test_messages_in_every_register_get_their_category(system: LocalSystem) -> None:
    base = uuid.uuid4().int % 10_000_000
    sent = {
        post(system, shape, base + i, text): (shape, category)
        for i, (shape, text, category) in enumerate(MESSAGES_SENT)
    }

    def classified() -> dict[str, dict[str, Any]] | None:
        seen = {m["message_id"]: m for m in published(system, MESSAGES) if m["message_id"] in sent}
        return seen if len(seen) == len(sent) else None

    seen = wait_until(classified, 30, "every message on support.messages")
    wrong = {
        m["text"][:40]: (m["category"], sent[mid][1])
        for mid, m in seen.items()
        if m["category"] != sent[mid][1]
    }
    assert wrong == {}
    theft = next(m for mid, m in seen.items() if sent[mid] == ("chat", "stolen_funds"))
    assert theft["language"] == "zh"
    assert theft["reasons"][0].startswith("model: stolen_funds ")


def test_a_correction_reprioritises_and_becomes_a_training_example(
    system: LocalSystem, db: Any
) -> None:
    # A question nobody is online to take: it waits in the queue as P4.
    n = uuid.uuid4().int % 10_000_000
    text = "hey quick one: is the BEP20 network for USDT supported on your side?"
    message_id = post(system, "chat", n, text)
    ticket = wait_until(
        lambda: db.tickets.find_one({"message_ids": message_id, "state": "queued"}), 30, "queued"
    )
    assert ticket["priority"] == "P4"

    # The agent reading it knows better: the customer's deposit on BEP20 is missing.
    reply = httpx.post(
        f"{system.url('router')}/v1/tickets/{ticket['_id']}/category",
        json={"category": "deposit", "agent_id": "alice"},
        headers=AUTH,
        timeout=10,
    )
    assert reply.status_code == 202, reply.text

    # The router re-prioritises the waiting ticket and says why.
    corrected = wait_until(
        lambda: db.tickets.find_one({"_id": ticket["_id"], "category": "deposit"}), 30, "P2"
    )
    assert corrected["priority"] == "P2"
    assert corrected["state"] == "queued"
    assert any("recategorized general → deposit by alice" in r for r in corrected["reasons"])
    events = [e for e in published(system, TICKETS) if e["ticket_id"] == ticket["_id"]]
    [event] = [e for e in events if e["event"] == "recategorized"]
    assert (event["message_id"], event["priority"], event["agent_id"]) == (
        message_id,
        "P2",
        "alice",
    )

    # Ingest keeps the redacted text with the agent's category ...
    example = wait_until(
        lambda: db.training_examples.find_one({"_id": ticket["_id"]}), 30, "training example"
    )
    assert (example["category"], example["predicted"], example["text"]) == (
        "deposit",
        "general",
        text,
    )

    # ... and the next training run takes it in.
    corrections = corrections_of(db.training_examples.find({}))
    assert [c.text for c in corrections] == [text]
    corpus = load_corpus(IngestSettings().classifier_corpus)
    small = [e for i, e in enumerate(corpus) if i % 8 == 0]  # a quick run, same recipe
    trained = train(small, classify_policy(), corrections)
    assert trained.model.meta["corrections"] == 1
    assert trained.train_count == len(small) - trained.held_out.total + 1


def test_a_pickled_model_stops_ingest_at_start(system: LocalSystem, tmp_path: Any) -> None:
    import pickle
    import subprocess
    import sys

    model = tmp_path / "model.npz"
    model.write_bytes(pickle.dumps({"coef": [[1.0]]}))
    env = {**system.env_for(system.services["ingest"]), "OMNIROUTE_CLASSIFIER_MODEL": str(model)}
    env["OMNIROUTE_HTTP_PORT"] = "0"
    done = subprocess.run(
        [sys.executable, "-m", "omniroute.cli", "ingest"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )

    assert done.returncode != 0
    assert b"pickle files are refused" in done.stderr
