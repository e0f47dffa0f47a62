"""SLA timers driven by ticket events: next response, pauses, escalations, the heap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.sla.calendar import business_between
from services.sla.deadlines import SlaPolicy, SlaState, Timer, load_policy
from shared.contracts.sla import SlaEvent
from shared.settings import REPO_POLICY_DIR
from tests.support.factories import T0, ticket_event

S = timedelta(seconds=1)


@pytest.fixture
def policy() -> SlaPolicy:
    return load_policy(REPO_POLICY_DIR / "sla.yaml")


class Ticket:
    """Feeds one ticket's events in sequence, each at T0 + `at` seconds."""

    def __init__(self, state: SlaState, ticket_id: str = "tkt_1", **fields: Any) -> None:
        self.state, self.ticket_id, self.fields, self.seq = state, ticket_id, fields, 0

    def __call__(
        self, event: str, at: float, now: float | None = None, **over: Any
    ) -> list[SlaEvent]:
        self.seq += 1
        self.fields.update(over)
        ev = ticket_event(event, self.seq, ticket_id=self.ticket_id, at=T0 + at * S, **self.fields)
        out, _ = self.state.on_ticket(ev, T0 + (at if now is None else now) * S)
        return out

    def timer(self, metric: str) -> Timer:
        return next(
            t
            for t in self.state.timers.values()
            if t.ticket_id == self.ticket_id and t.metric == metric and t.active
        )


def names(events: list[SlaEvent]) -> list[tuple[str, str]]:
    return [(e.event, e.metric) for e in events]


def fire(state: SlaState, at: float) -> list[tuple[str, str]]:
    return names(state.fire_due(T0 + at * S)[0])


def test_next_response_runs_from_the_customer_message_to_the_agent_reply(
    policy: SlaPolicy,
) -> None:
    state = SlaState(policy)
    ticket = Ticket(state, priority="P2")  # chat P2: first 180 s, next 300 s
    ticket("opened", 0)
    # A second message before any reply starts nothing new: first response still runs.
    assert names(ticket("message_added", 10)) == []
    met = ticket("agent_replied", 50)
    assert names(met) == [("met", "first_response")]
    assert met[0].achieved_s == 50 and not met[0].breached
    started = ticket("customer_replied", 100)
    assert names(started) == [("started", "next_response")]
    assert started[0].due_at == T0 + 400 * S
    assert fire(state, 324) == [] and fire(state, 325) == [("warning", "next_response")]
    replied = ticket("agent_replied", 330)
    assert names(replied) == [("met", "next_response")]
    assert replied[0].achieved_s == 230
    # Each customer message after a reply opens the next cycle, with its own timer id.
    again = ticket("message_added", 400)
    assert names(again) == [("started", "next_response")]
    assert again[0].timer_id != started[0].timer_id
    assert fire(state, 10_000) == [("warning", "next_response"), ("breached", "next_response")]


def test_waiting_on_customer_pauses_every_clock_and_moves_deadlines_by_the_pause(
    policy: SlaPolicy,
) -> None:
    state = SlaState(policy)
    ticket = Ticket(state, priority="P1")  # chat P1: first 60 s, resolution 14400 s
    ticket("opened", 0)
    paused = ticket("waiting_on_customer", 20)
    assert sorted(names(paused)) == [("paused", "first_response"), ("paused", "resolution")]
    assert state.counts == {"running": 0, "paused": 2}
    # Nothing fires while the customer has the ball, however long it takes.
    assert fire(state, 5000) == []
    resumed = ticket("customer_replied", 320.5)
    assert sorted(names(resumed)) == [("resumed", "first_response"), ("resumed", "resolution")]
    assert ticket.timer("first_response").due_at == T0 + (60 + 300.5) * S
    assert ticket.timer("resolution").due_at == T0 + (14400 + 300.5) * S
    assert ticket.timer("first_response").warn_at == T0 + (45 + 300.5) * S
    assert fire(state, 345.4) == []
    assert fire(state, 345.5) == [("warning", "first_response")]
    # Elapsed time excludes the pause: 20 s before it, 40 s after.
    met = ticket("agent_replied", 360.5)
    assert met[0].achieved_s == 60.0 and not met[0].breached


def test_pause_under_business_hours_counts_only_open_time() -> None:
    policy = SlaPolicy.model_validate(
        {
            "targets": {
                p: {"first_response_s": 7200, "next_response_s": 7200, "resolution_s": 36000}
                for p in ("P1", "P2", "P3", "P4")
            },
            "calendar": "london",
            "calendars": {
                "london": {
                    "timezone": "Europe/London",
                    "hours": {d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
                }
            },
        }
    )
    state = SlaState(policy)
    ticket = Ticket(state, priority="P3", channel="email")
    friday_4pm = datetime(2026, 11, 20, 16, tzinfo=UTC)  # London is on GMT
    at = (friday_4pm - T0).total_seconds()
    [first, _] = ticket("opened", at)
    assert first.due_at == datetime(2026, 11, 23, 10, tzinfo=UTC)  # 1h Fri + 1h Mon
    assert first.calendar == "london"
    # Paused 16:30 Friday, resumed 09:45 Monday: 30 + 45 business minutes of pause (the
    # weekend does not count).
    ticket("waiting_on_customer", at + 1800)
    monday = datetime(2026, 11, 23, 9, 45, tzinfo=UTC)
    ticket("customer_replied", (monday - T0).total_seconds())
    moved = ticket.timer("first_response").due_at
    hours = policy.hours("london")
    assert business_between(hours, first.due_at, moved) == timedelta(minutes=75)
    assert moved == datetime(2026, 11, 23, 11, 15, tzinfo=UTC)


def test_resolved_meets_resolution_and_reopened_restarts_it(policy: SlaPolicy) -> None:
    state = SlaState(policy)
    ticket = Ticket(state, priority="P2")
    [_, resolution] = ticket("opened", 0)
    done = ticket("resolved", 600)
    assert sorted(names(done)) == [("cancelled", "first_response"), ("met", "resolution")]
    assert next(e for e in done if e.event == "met").achieved_s == 600
    assert state.counts == {"running": 0, "paused": 0}
    reopened = ticket("reopened", 900)
    assert sorted(names(reopened)) == [("started", "next_response"), ("started", "resolution")]
    again = next(e for e in reopened if e.metric == "resolution")
    assert again.timer_id != resolution.timer_id
    assert again.due_at == T0 + (900 + 86400) * S


def test_escalation_retargets_running_timers_from_what_they_counted(policy: SlaPolicy) -> None:
    state = SlaState(policy)
    ticket = Ticket(state, priority="P3")  # chat P3 first response: 300 s
    ticket("opened", 0)
    ticket("waiting_on_customer", 10)
    ticket("customer_replied", 110)  # 100 s paused: counted 10 s so far
    assert ticket.timer("first_response").due_at == T0 + 400 * S
    # A message about stolen funds makes it P1 (chat: 60 s) at 140 s: 40 s counted.
    moved = ticket("escalated", 140, priority="P1", category="stolen_funds")
    assert sorted(names(moved)) == [("retargeted", "first_response"), ("retargeted", "resolution")]
    first = ticket.timer("first_response")
    assert (first.priority, first.target_s) == ("P1", 60)
    assert first.due_at == T0 + 160 * S and first.warn_at == T0 + 145 * S
    assert fire(state, 160) == [("warning", "first_response"), ("breached", "first_response")]
    # Escalated past the new target: it is due at once, and says since when.
    late = Ticket(state, "tkt_2", priority="P4")
    late("opened", 0)
    late("escalated", 200, priority="P1", category="stolen_funds")
    fired, _ = state.fire_due(T0 + 200 * S)
    breach = next(e for e in fired if e.ticket_id == "tkt_2" and e.event == "breached")
    assert breach.due_at == T0 + 60 * S and breach.threshold_at == T0 + 60 * S


def test_vip_customers_get_their_tier_targets(policy: SlaPolicy) -> None:
    state = SlaState(policy)
    [first, _] = Ticket(state, priority="P1", customer_tier="vip7")("opened", 0)
    assert (first.policy, first.target_s, first.customer_tier) == ("vip", 30, "vip7")


def test_each_threshold_fires_once_even_when_the_deadline_moves(policy: SlaPolicy) -> None:
    state = SlaState(policy)
    ticket = Ticket(state, priority="P1")
    ticket("opened", 0)
    assert fire(state, 50) == [("warning", "first_response")]
    ticket("waiting_on_customer", 55)
    ticket("customer_replied", 155)
    assert fire(state, 159) == []  # the warning is not repeated at the moved time
    assert fire(state, 160) == [("breached", "first_response")]
    assert fire(state, 100_000) == [("warning", "resolution"), ("breached", "resolution")]
    assert fire(state, 200_000) == []


def test_a_restart_refires_only_what_was_not_stored_as_fired(policy: SlaPolicy) -> None:
    state = SlaState(policy)
    ticket = Ticket(state, priority="P1")
    ticket("opened", 0)
    assert fire(state, 46) == [("warning", "first_response")]
    stored = [t.snapshot() for t in state.timers.values()]  # what MongoDB holds
    restarted = SlaState(policy)
    for t in stored:
        restarted.add(t)
    assert fire(restarted, 46) == []
    assert fire(restarted, 61) == [("breached", "first_response")]


def test_the_heap_sheds_stale_entries(policy: SlaPolicy) -> None:
    state = SlaState(policy)
    tickets = [Ticket(state, f"tkt_{i}", priority="P2") for i in range(300)]
    for i, ticket in enumerate(tickets):
        ticket("opened", i)
    # Every pause and resume leaves the old entries behind in the heap.
    for cycle in range(20):
        for ticket in tickets:
            ticket("waiting_on_customer", 1000 + cycle * 10)
            ticket("customer_replied", 1005 + cycle * 10)
    live = 4 * len(tickets)  # two timers, two thresholds each
    assert len(state.heap) <= 2 * live + 1024
    # Once every timer is finished, nothing is left to fire and the heap empties.
    for ticket in tickets:
        ticket("resolved", 2000)
    assert state.next_due() is None and state.heap == []
    assert state.counts == {"running": 0, "paused": 0}


def test_finished_timers_are_forgotten_after_the_dedupe_window(policy: SlaPolicy) -> None:
    state = SlaState(policy, dedupe_window_s=3600)
    ticket = Ticket(state, priority="P2")
    ticket("opened", 0)
    ticket("resolved", 10)
    # Within the window a redelivered event is recognised...
    assert state.on_ticket(ticket_event("opened", 1, ticket_id="tkt_1"), T0) == ([], set())
    assert state.evict(T0 + 1800 * S) == 0
    assert state.evict(T0 + 3700 * S) == 2
    assert state.timers == {} and state.applied_seq == {}


@st.composite
def event_sequences(draw: st.DrawFn) -> list[tuple[int, str, float, str]]:
    kinds = st.sampled_from(
        [
            "message_added",
            "agent_replied",
            "waiting_on_customer",
            "customer_replied",
            "escalated",
            "resolved",
            "reopened",
            "assigned",
        ]
    )
    steps = draw(
        st.lists(
            st.tuples(
                st.integers(0, 4),
                kinds,
                st.floats(0, 400, allow_nan=False),
                st.sampled_from(["P1", "P2", "P3", "P4"]),
            ),
            max_size=60,
        )
    )
    return [(ticket, kind, gap, priority) for ticket, kind, gap, priority in steps]


@settings(max_examples=150, deadline=None)
@given(event_sequences())
def test_counts_heap_and_firing_stay_consistent(
    steps: list[tuple[int, str, float, str]],
) -> None:
    state = SlaState(load_policy(REPO_POLICY_DIR / "sla.yaml"))
    tickets = [Ticket(state, f"tkt_{i}", priority="P2") for i in range(5)]
    for ticket in tickets:
        ticket("opened", 0)
    clock = 0.0
    fired: list[tuple[str, str]] = []
    for index, kind, gap, priority in steps:
        clock += gap
        tickets[index](kind, clock, priority=priority)
        out, _ = state.fire_due(T0 + clock * S)
        fired += [(e.timer_id, e.event) for e in out]
        # Counts kept on the way equal a full scan; the heap stays bounded.
        scan = {"running": 0, "paused": 0}
        for t in state.timers.values():
            if t.active:
                scan[t.state] += 1
        assert state.counts == scan
        assert len(state.heap) <= 2 * 2 * (scan["running"] + scan["paused"]) + 1024
    fired += [(e.timer_id, e.event) for e in state.fire_due(T0 + (clock + 10**7) * S)[0]]
    assert len(fired) == len(set(fired))  # no threshold twice
