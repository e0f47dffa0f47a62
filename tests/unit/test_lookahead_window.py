"""The look-ahead's window: which likely-P1 records may overtake the in-order consumer."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import TopicPartition

from shared.lookahead import Window

T = "support.inbound.chat"
P0 = TopicPartition(T, 0)
P1 = TopicPartition(T, 1)


@dataclass(frozen=True)
class Rec:
    offset: int
    key: bytes | None
    partition: int = 0
    topic: str = T
    timestamp: int = 0


def surge(n: int, start: int = 0, partition: int = 0) -> list[Rec]:
    """`n` ordinary records, each its own conversation."""
    return [Rec(o, f"c{o}".encode(), partition, timestamp=o) for o in range(start, start + n)]


def window_at(committed: int, ends: int = 10_000, max_records: int = 20_000) -> Window:
    w = Window(max_records)
    w.advance({P0: committed}, {P0: ends})
    return w


def test_a_report_behind_a_surge_is_promoted_and_the_newest_are_triaged_first() -> None:
    w = window_at(0)
    report = Rec(500, b"theft", timestamp=500)
    w.add(P0, [*surge(500), report])
    chunk = w.newest(50)
    # The report came last, so it is triaged first; the rest waits for later rounds.
    assert chunk[0] is report and w.untriaged() == 451
    chosen, held = w.select([(r, r is report) for r in chunk])
    assert chosen == [report] and held == 0


def test_an_earlier_message_of_the_same_conversation_holds_the_report_until_committed() -> None:
    w = window_at(0)
    question = Rec(10, b"conv-a", timestamp=10)
    report = Rec(300, b"conv-a", timestamp=300)
    w.add(P0, [*surge(10), question, *surge(289, 11), report])
    assert w.select([(report, True)]) == ([], 1)
    # Another conversation's records are no obstacle; the earlier question is, until the
    # in-order consumer commits past it: then the held report goes at once.
    w.advance({P0: 10}, {P0: 301})
    assert w.select([]) == ([], 1)
    w.advance({P0: 11}, {P0: 301})
    assert w.select([]) == ([report], 0)


def test_later_reports_of_a_promoted_conversation_follow_it() -> None:
    w = window_at(0)
    first, second = Rec(100, b"conv-a", timestamp=100), Rec(101, b"conv-a", timestamp=101)
    w.add(P0, [*surge(100), first, second])
    chosen, _ = w.select([(second, True), (first, True)])
    assert chosen == [first, second]


def test_an_ordinary_message_after_a_promoted_one_does_not_block_anything() -> None:
    w = window_at(0)
    report, reply = Rec(5, b"conv-a", timestamp=5), Rec(6, b"conv-a", timestamp=6)
    w.add(P0, [*surge(5), report, reply])
    assert w.select([(reply, False), (report, True)])[0] == [report]


def test_a_failed_promotion_blocks_its_conversation_for_the_in_order_pass() -> None:
    w = window_at(0)
    report, later = Rec(5, b"conv-a", timestamp=5), Rec(9, b"conv-a", timestamp=9)
    w.add(P0, [*surge(5), report, *surge(3, 6), later])
    chosen, _ = w.select([(report, True)])
    w.failed(chosen)
    # The report is the in-order pass's now, and a later report of its conversation waits.
    assert w.select([(later, True)]) == ([], 1)


def test_a_window_that_does_not_reach_back_to_the_consumer_promotes_nothing() -> None:
    # 50,000 records wait; the look-ahead reads only the newest 1,000: the unread ones may
    # hold an earlier message of any conversation.
    w = window_at(0, ends=50_000, max_records=1_000)
    assert w.positions() == {P0: 49_000}
    report = Rec(49_999, b"theft", timestamp=1)
    w.add(P0, [*surge(999, 49_000), report])
    assert w.select([(report, True)]) == ([], 1)
    # Once the consumer reaches the window's start, it is complete.
    w.advance({P0: 49_000}, {P0: 50_000})
    assert w.select([]) == ([report], 0)


def test_the_consumer_overtaking_the_look_ahead_restarts_it_at_the_consumer() -> None:
    w = window_at(0)
    w.add(P0, surge(100))
    held = Rec(99, b"c99", timestamp=99)
    w.select([(held, True)])
    w.advance({P0: 400}, {P0: 500})
    assert w.positions() == {P0: 400}
    assert w.untriaged() == 0 and w.select([]) == ([], 0)


def test_partitions_are_independent_and_records_read_twice_count_once() -> None:
    w = Window()
    w.advance({P0: 0, P1: 0}, {P0: 10, P1: 10})
    w.add(P0, [Rec(0, b"conv-a")])
    w.add(P0, [Rec(0, b"conv-a")])  # re-read after a seek
    report = Rec(3, b"conv-a", partition=1, timestamp=3)
    w.add(P1, [*surge(3, partition=1), report])
    assert w.untriaged() == 5
    assert w.select([(report, True)]) == ([report], 0)


def test_records_without_a_key_keep_their_order_among_themselves() -> None:
    w = window_at(0)
    unkeyed, report = Rec(0, None), Rec(1, None, timestamp=1)
    w.add(P0, [unkeyed, report])
    assert w.select([(report, True)]) == ([], 1)
