"""Business-hours calendars: exact across DST changes, holidays, closed hours and weekends."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.sla.calendar import (
    WEEKDAYS,
    BusinessHours,
    CalendarError,
    CalendarSpec,
    add_business,
    business_between,
)

LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")
H = timedelta(hours=1)
WEEKDAYS_9_TO_5 = {d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")}


def calendar(tz: str, hours: dict[str, list[str]], holidays: Sequence[date] = ()) -> BusinessHours:
    return CalendarSpec.model_validate(
        {"timezone": tz, "hours": hours, "holidays": list(holidays)}
    ).compile("test")


def open_time(cal: BusinessHours, day: date) -> timedelta:
    return sum((e - s for s, e in cal.day(day)), timedelta())


# -- daylight saving -------------------------------------------------------------------


def test_a_day_open_around_the_clock_follows_the_clocks_in_london() -> None:
    always = calendar("Europe/London", {d: ["00:00-24:00"] for d in WEEKDAYS})
    assert open_time(always, date(2026, 3, 28)) == 24 * H
    assert open_time(always, date(2026, 3, 29)) == 23 * H  # clocks go forward at 01:00
    assert open_time(always, date(2026, 10, 25)) == 25 * H  # and back at 02:00
    # Open around the clock, business time is real time: 24 hours from Saturday noon end
    # at 13:00 on Sunday, the wall clock having skipped an hour.
    start = datetime(2026, 3, 28, 12, tzinfo=LONDON)
    due = add_business(always, start, 24 * H)
    assert due == datetime(2026, 3, 29, 13, tzinfo=LONDON)
    assert due - start == 24 * H
    # A desk open 09:00-17:00 every day: Saturday 16:00 + 2h = Sunday 10:00 BST, which is
    # 17 real hours later (not 18): the night was an hour shorter.
    desk = calendar("Europe/London", {d: ["09:00-17:00"] for d in WEEKDAYS})
    due = add_business(desk, datetime(2026, 3, 28, 16, tzinfo=LONDON), 2 * H)
    assert due == datetime(2026, 3, 29, 10, tzinfo=LONDON)
    assert due - datetime(2026, 3, 28, 16, tzinfo=LONDON) == 17 * H


def test_new_york_wall_clock_hours_on_change_days() -> None:
    # Fall back (1 Nov 2026): 00:00-02:00 local covers 01:00-02:00 twice: three real hours.
    fall = calendar("America/New_York", {"sun": ["00:00-02:00"]})
    assert fall.day(date(2026, 11, 1)) == (
        (datetime(2026, 11, 1, 4, tzinfo=UTC), datetime(2026, 11, 1, 7, tzinfo=UTC)),
    )
    # 01:30-03:00 on that day is two pieces of real time: 01:30-02:00 EDT, 01:30-03:00 EST.
    split = calendar("America/New_York", {"sun": ["01:30-03:00"]})
    assert split.day(date(2026, 11, 1)) == (
        (datetime(2026, 11, 1, 5, 30, tzinfo=UTC), datetime(2026, 11, 1, 6, tzinfo=UTC)),
        (datetime(2026, 11, 1, 6, 30, tzinfo=UTC), datetime(2026, 11, 1, 8, tzinfo=UTC)),
    )
    # Spring forward (8 Mar 2026): 02:00-03:00 never happens, so 01:00-04:00 is two hours.
    spring = calendar("America/New_York", {"sun": ["01:00-04:00"]})
    assert open_time(spring, date(2026, 3, 8)) == 2 * H
    assert open_time(spring, date(2026, 3, 15)) == 3 * H


def test_office_hours_deadline_spans_a_weekend_and_the_dst_change() -> None:
    office = calendar("Europe/London", WEEKDAYS_9_TO_5)
    # Friday 16:00 GMT + 2 business hours: 1 on Friday, 1 on Monday (now BST).
    start = datetime(2026, 3, 27, 16, tzinfo=LONDON)
    due = add_business(office, start, 2 * H)
    assert due == datetime(2026, 3, 30, 10, tzinfo=LONDON)
    assert due == datetime(2026, 3, 30, 9, tzinfo=UTC)
    assert business_between(office, start, due) == 2 * H
    # New York falls back on Sunday 1 Nov: Friday 16:00 EDT + 3h -> Monday 11:00 EST.
    ny = calendar("America/New_York", WEEKDAYS_9_TO_5)
    due_ny = add_business(ny, datetime(2026, 10, 30, 16, tzinfo=NEW_YORK), 3 * H)
    assert due_ny == datetime(2026, 11, 2, 11, tzinfo=NEW_YORK)
    assert due_ny == datetime(2026, 11, 2, 16, tzinfo=UTC)


def test_holidays_and_closed_hours_are_skipped() -> None:
    office = calendar(
        "Europe/London", WEEKDAYS_9_TO_5, holidays=[date(2026, 12, 25), date(2026, 12, 28)]
    )
    # Thursday 24 Dec 16:00 + 2h: 1h that day; Fri 25 and Mon 28 are holidays, then Tuesday.
    due = add_business(office, datetime(2026, 12, 24, 16, tzinfo=LONDON), 2 * H)
    assert due == datetime(2026, 12, 29, 10, tzinfo=LONDON)
    # Written on Saturday night: the clock starts on Monday at 09:00.
    saturday = datetime(2026, 11, 21, 22, tzinfo=LONDON)
    assert add_business(office, saturday, 30 * 60 * timedelta(seconds=1)) == datetime(
        2026, 11, 23, 9, 30, tzinfo=LONDON
    )
    assert business_between(office, saturday, datetime(2026, 11, 23, 9, tzinfo=LONDON)) == H * 0
    # Exactly a day's hours from the opening ends at the closing, not the next opening.
    monday = datetime(2026, 11, 23, 9, tzinfo=LONDON)
    assert add_business(office, monday, 8 * H) == datetime(2026, 11, 23, 17, tzinfo=LONDON)
    # Backwards: the latest instant that much business time earlier.
    assert add_business(office, monday, -H) == datetime(2026, 11, 20, 16, tzinfo=LONDON)
    assert business_between(office, monday, saturday) == -business_between(office, saturday, monday)


def test_calendar_time_is_the_default() -> None:
    start = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    assert add_business(None, start, 5 * H) == start + 5 * H
    assert business_between(None, start, start + 90 * H) == 90 * H


def test_a_calendar_that_never_opens_says_so() -> None:
    mondays = [date(2026, 1, 5) + timedelta(weeks=w) for w in range(3 * 53 + 5)]
    only_holidays = calendar("UTC", {"mon": ["09:00-10:00"]}, holidays=mondays)
    with pytest.raises(CalendarError):
        add_business(only_holidays, datetime(2026, 1, 1, tzinfo=UTC), H)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("timezone", "Mars/Olympus_Mons", "unknown time zone"),
        ("hours", {"mon": ["09:00-12:00", "11:00-13:00"]}, "overlap"),
        ("hours", {"mon": ["22:00-06:00"]}, "same day"),
        ("hours", {"mon": ["9-5"]}, "HH:MM-HH:MM"),
        ("hours", {"mon": ["09:00-24:30"]}, "not a time of day"),
        ("hours", {"mon": []}, "at least one weekday"),
        ("hours", {"monday": ["09:00-17:00"]}, "mon"),
    ],
)
def test_broken_calendars_are_refused_with_the_reason(
    field: str, value: object, reason: str
) -> None:
    spec = {"timezone": "Europe/London", "hours": WEEKDAYS_9_TO_5, field: value}
    with pytest.raises(ValidationError, match=reason):
        CalendarSpec.model_validate(spec)


# -- properties --------------------------------------------------------------------------

ZONES = [
    "UTC",
    "Europe/London",
    "America/New_York",
    "Australia/Lord_Howe",  # half-hour DST
    "Asia/Kolkata",
    "America/Sao_Paulo",
    "Pacific/Chatham",
]


@st.composite
def calendars(draw: st.DrawFn) -> BusinessHours:
    hours: dict[str, list[str]] = {}
    for day in WEEKDAYS:
        cuts = sorted(
            draw(st.sets(st.integers(0, 96), min_size=0, max_size=4).map(sorted))
        )  # quarter hours
        ranges = [
            f"{a // 4:02d}:{a % 4 * 15:02d}-{b // 4:02d}:{b % 4 * 15:02d}"
            for a, b in zip(cuts[::2], cuts[1::2], strict=False)
            if a < b
        ]
        if ranges:
            hours[day] = ranges
    if not hours:
        hours["wed"] = ["10:00-11:00"]
    holidays = draw(
        st.lists(st.dates(date(2025, 12, 1), date(2028, 2, 1)), max_size=12, unique=True)
    )
    return calendar(draw(st.sampled_from(ZONES)), hours, holidays)


instants = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
)
amounts = st.integers(0, 10 * 24 * 3600 * 10**6).map(lambda us: timedelta(microseconds=us))
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(calendars(), instants, amounts)
def test_deadline_counts_exactly_the_target_in_business_time(
    cal: BusinessHours, start: datetime, amount: timedelta
) -> None:
    due = add_business(cal, start, amount)
    assert due >= start
    assert business_between(cal, start, due) == amount
    # Going back the same amount lands where business time had not started counting yet.
    back = add_business(cal, due, -amount)
    assert start <= back <= due
    assert business_between(cal, back, due) == amount


@PROPERTY
@given(calendars(), instants, amounts, amounts)
def test_deadlines_compose(cal: BusinessHours, start: datetime, a: timedelta, b: timedelta) -> None:
    assert add_business(cal, add_business(cal, start, a), b) == add_business(cal, start, a + b)


@PROPERTY
@given(calendars(), instants, amounts, amounts, amounts)
def test_pausing_moves_the_deadline_by_exactly_the_paused_business_time(
    cal: BusinessHours, start: datetime, target: timedelta, run: timedelta, pause: timedelta
) -> None:
    # The clock runs from `start`, pauses at `p` (before the deadline), resumes at `r`.
    due = add_business(cal, start, target)
    p = min(start + run, due)
    r = p + pause
    remaining = target - business_between(cal, start, p)
    moved = add_business(cal, r, remaining)
    assert business_between(cal, due, moved) == business_between(cal, p, r)
    assert business_between(cal, start, moved) - business_between(cal, p, r) == target


@PROPERTY
@given(calendars(), instants, instants, instants)
def test_business_time_adds_up(cal: BusinessHours, a: datetime, b: datetime, c: datetime) -> None:
    assert business_between(cal, a, b) + business_between(cal, b, c) == business_between(cal, a, c)
    assert business_between(cal, a, b) <= abs(b - a) or a > b
