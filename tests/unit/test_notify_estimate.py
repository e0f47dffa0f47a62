"""The wait a customer is told (services/notify/estimate.py): position in the queue, the
queue's measured pace, the SLA deadline, the desk's opening, and when to correct it."""

from __future__ import annotations

from datetime import timedelta

from services.notify.estimate import (
    Deadline,
    EstimatePolicy,
    Queued,
    QueueIndex,
    Sample,
    estimate,
    pace_s,
    recheck_at,
    tier_rank,
)
from tests.support.factories import T0

POLICY = EstimatePolicy(samples=64, half_life=16, min_samples=3)


def s(n: int, per_place_s: float, *, position: int = 1, tid: str | None = None) -> Sample:
    return Sample(
        "P4", tid or f"t{n}", 1, per_place_s * position, position, T0 + timedelta(seconds=n)
    )


def test_position_counts_higher_priorities_and_earlier_tickets_of_the_same() -> None:
    at = [T0 + timedelta(seconds=n) for n in range(5)]
    queue = QueueIndex(
        {"a": Queued("P4", at[0]), "b": Queued("P4", at[2]), "c": Queued("P2", at[4])}
    )
    assert queue.position("b", Queued("P4", at[2])) == 3  # c (P2), a (earlier), then b
    assert queue.position("c", Queued("P2", at[4])) == 1
    assert queue.position("new", Queued("P4", at[3])) == 4
    queue.set("a", None)  # an agent took it
    queue.set("d", Queued("P1", at[4]))
    assert queue.position("b", Queued("P4", at[2])) == 3  # d (P1), c (P2), then b
    assert queue.position("d", Queued("P1", at[4])) == 1
    # The router serves a higher VIP tier first within a priority, whenever it came.
    queue.set("vip", Queued("P4", at[4], tier_rank("vip5")))
    assert queue.position("vip", Queued("P4", at[4], 5)) == 3  # d (P1), c (P2), then vip
    assert queue.position("b", Queued("P4", at[2])) == 4
    assert (tier_rank("vip9"), tier_rank("standard"), tier_rank("vipx")) == (9, 0, 0)


def test_pace_is_a_weighted_median_that_an_outlier_barely_moves() -> None:
    steady = [s(n, 30) for n in range(10)]
    assert pace_s(steady, POLICY) == 30
    assert pace_s([*steady, s(10, 3600)], POLICY) == 30
    # Per place: a ticket that waited 300 s from place 10 took 30 s a place.
    assert pace_s([s(n, 30, position=10) for n in range(5)], POLICY) == 30


def test_pace_follows_the_recent_queue_and_needs_enough_measurements() -> None:
    old, new = [s(n, 100) for n in range(20)], [s(20 + n, 20) for n in range(12)]
    # Twelve recent measurements outweigh twenty older ones at a 16-sample half-life.
    assert pace_s(old + new, POLICY) == 20
    assert pace_s([s(0, 10), s(1, 10)], POLICY) is None
    # A redelivered assignment counts once.
    assert pace_s([s(0, 10, tid="x"), s(1, 10, tid="x"), s(2, 10, tid="x")], POLICY) is None


def test_estimate_kinds() -> None:
    deadline = Deadline(target_s=1800, due_at=T0 + timedelta(seconds=1800), at=T0)
    assert estimate(4, 60, deadline, T0).kind == "estimate"
    assert estimate(4, 60, deadline, T0).expected_s == 240
    past = estimate(40, 60, deadline, T0)
    assert (past.kind, past.expected_s, past.target_s) == ("past_due", 2400, 1800)
    assert estimate(4, None, deadline, T0).kind == "target_only"
    assert estimate(4, None, deadline, T0).expected_s == 1800
    # No deadline and nothing measured: no promise at all; a measured pace is still told.
    assert estimate(4, None, None, T0).kind == "unknown"
    assert estimate(4, 60, None, T0).kind == "estimate"
    # sla's deadline already passed and nothing measured: nothing to promise either.
    assert estimate(4, None, deadline, T0 + timedelta(hours=1)).kind == "unknown"


def test_a_closed_desk_counts_from_its_opening() -> None:
    # Opened at T0; the desk opens in 9 hours; the 1-hour target counts from then.
    opens = T0 + timedelta(hours=9)
    deadline = Deadline(3600, opens + timedelta(hours=1), T0, calendar="emea_office")
    e = estimate(5, 60, deadline, T0)
    assert (e.kind, e.opens_in_s, e.expected_s) == ("desk_closed", 9 * 3600, 9 * 3600 + 300)
    late = estimate(100, 60, deadline, T0)
    assert (late.kind, late.opens_in_s) == ("past_due", 9 * 3600)


def test_recheck_after_the_estimate_and_its_margin() -> None:
    policy = EstimatePolicy(correction_margin=0.5, correction_min_s=120)
    e = estimate(10, 60, None, T0)  # 600 s
    assert recheck_at(T0, e, policy) == T0 + timedelta(seconds=900)
    short = estimate(1, 60, None, T0)  # 60 s: the 120 s floor
    assert recheck_at(T0, short, policy) == T0 + timedelta(seconds=180)
    assert recheck_at(T0, estimate(1, None, None, T0), policy) is None
