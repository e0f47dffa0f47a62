"""The waiting line: best first per need class, lazy removal, counters without scans."""

from __future__ import annotations

from services.router.priority import load_policy, queue_key
from services.router.queue import ClassKey, TicketQueue
from shared.contracts.common import Priority
from shared.settings import REPO_POLICY_DIR

POLICY = load_policy(REPO_POLICY_DIR / "routing.yaml")
CHAT_EN: ClassKey = ("general", "chat", "deposit", "en")
CHAT_ZH: ClassKey = ("general", "chat", "deposit", "zh")
EMAIL_EN: ClassKey = ("general", "email", "kyc", "en")


def push(q: TicketQueue, tid: str, klass: ClassKey, priority: Priority, since: float) -> None:
    key = queue_key(priority, "standard", since, POLICY, ticket_id=tid)
    q.push(tid, klass, key, priority, since)


def test_best_looks_only_at_classes_the_agent_accepts() -> None:
    q = TicketQueue()
    push(q, "p3-en", CHAT_EN, "P3", 100)
    push(q, "p1-zh", CHAT_ZH, "P1", 200)
    push(q, "p2-email", EMAIL_EN, "P2", 50)
    assert q.best(lambda k, _: True) == "p1-zh"
    assert q.best(lambda k, _: k[3] == "en") == "p2-email"
    assert q.best(lambda k, _: k == CHAT_EN) == "p3-en"
    assert q.best(lambda k, _: False) is None
    # The key is passed too: an emergency slot takes P1 only.
    assert q.best(lambda k, key: key[0] == 1) == "p1-zh"


def test_removal_and_reranking_are_lazy_but_exact() -> None:
    q = TicketQueue()
    push(q, "a", CHAT_EN, "P4", 100)
    push(q, "b", CHAT_EN, "P4", 200)
    q.remove("a")
    assert q.best(lambda k, _: True) == "b"
    assert "a" not in q and len(q) == 1
    push(q, "a", CHAT_EN, "P4", 100)  # back in line with its original age
    assert list(q.ordered()) == ["a", "b"]
    push(q, "b", CHAT_EN, "P1", 200)  # re-ranked: raised to P1
    assert list(q.ordered()) == ["b", "a"]
    assert q.depth == {"P1": 1, "P2": 0, "P3": 0, "P4": 1}


def test_oldest_waiting_per_priority() -> None:
    q = TicketQueue()
    push(q, "old", CHAT_EN, "P2", 100)
    push(q, "new", EMAIL_EN, "P2", 300)
    push(q, "p4", CHAT_EN, "P4", 50)
    assert q.oldest_since("P2") == 100
    q.remove("old")
    assert q.oldest_since("P2") == 300
    assert q.oldest_since("P1") is None
    assert q.oldest_since("P4") == 50


def test_compaction_keeps_the_order() -> None:
    q = TicketQueue()
    for n in range(3000):  # churn: far more stale entries than live ones
        push(q, f"t{n % 50}", CHAT_EN if n % 2 else EMAIL_EN, "P3", float(n))
    assert len(q) == 50
    assert q._entries <= 2 * len(q) + 1024
    best = q.best(lambda k, _: True)
    assert best == min(q.live.values(), key=lambda w: w.key).ticket_id
    assert list(q.ordered()) == [w.ticket_id for w in sorted(q.live.values(), key=lambda w: w.key)]
