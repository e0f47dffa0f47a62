"""Business hours: which instants count towards an SLA target, and deadlines in business time.

Pure functions with explicit times; no I/O, no clock. `None` stands for calendar time
(24/7), the default: crypto support never closes. A `BusinessHours` counts only the
instants whose local wall-clock time, in its IANA time zone, falls inside the weekly
opening hours on a day that is not a holiday. Daylight-saving changes are exact: on the
day London springs forward an office open 00:00-24:00 is open 23 hours; on the day New
York falls back, 00:00-02:00 is three real hours.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ZERO = timedelta(0)
DAY = timedelta(days=1)
# A calendar with no open instant in this many days is a configuration error, not a wait.
MAX_SEARCH_DAYS = 3 * 366
_RANGE = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
_DAY_CACHE_SIZE = 4096

# (utc_start, utc_end), start < end, both aware UTC
Interval = tuple[datetime, datetime]


class CalendarError(ValueError):
    """A calendar that cannot answer (no open hours for years)."""


def _parse_range(text: str) -> tuple[int, int]:
    """ "09:00-17:30" -> (32400, 63000) seconds after local midnight; "24:00" ends a day."""
    m = _RANGE.match(text.strip())
    if m is None:
        raise ValueError(f"{text!r}: expected HH:MM-HH:MM")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
        raise ValueError(f"{text!r}: not a time of day")
    start, end = h1 * 3600 + m1 * 60, h2 * 3600 + m2 * 60
    if end <= start:
        raise ValueError(
            f"{text!r}: the end must follow the start on the same day "
            "(split a night shift: 22:00-24:00 and the next day's 00:00-06:00)"
        )
    return start, end


class CalendarSpec(BaseModel):
    """A business-hours calendar as written in policy/sla.yaml."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    timezone: str = Field(description="IANA time zone, e.g. Europe/London")
    hours: dict[Weekday, list[str]] = Field(
        description='Opening hours per weekday in local time, e.g. mon: ["09:00-17:30"]; '
        "a day left out is closed"
    )
    holidays: list[date] = Field(default_factory=list, description="Local dates closed all day")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("hours")
    @classmethod
    def _valid_hours(cls, value: dict[Weekday, list[str]]) -> dict[Weekday, list[str]]:
        for day, ranges in value.items():
            parsed = sorted(_parse_range(r) for r in ranges)
            for (_, end), (start, _) in itertools.pairwise(parsed):
                if start < end:
                    raise ValueError(f"{day}: opening hours overlap")
        if not any(value.values()):
            raise ValueError("a calendar needs opening hours on at least one weekday")
        return value

    def compile(self, name: str) -> BusinessHours:
        weekly = tuple(
            tuple(sorted(_parse_range(r) for r in self.hours.get(day, []))) for day in WEEKDAYS
        )
        return BusinessHours(
            name=name,
            zone=ZoneInfo(self.timezone),
            weekly=weekly,
            holidays=frozenset(self.holidays),
        )


@dataclass(frozen=True, eq=False)
class BusinessHours:
    """A compiled calendar: open intervals in UTC, computed per local day and cached."""

    name: str
    zone: ZoneInfo
    # per weekday, Monday first: ((start_s, end_s), ...) seconds after local midnight
    weekly: tuple[tuple[tuple[int, int], ...], ...]
    holidays: frozenset[date] = frozenset()
    _days: dict[date, tuple[Interval, ...]] = field(default_factory=dict, repr=False)

    def local_date(self, at: datetime) -> date:
        return at.astimezone(self.zone).date()

    def day(self, d: date) -> tuple[Interval, ...]:
        """The open intervals (UTC) of local date `d`, in order."""
        cached = self._days.get(d)
        if cached is not None:
            return cached
        pieces: list[Interval] = []
        if d not in self.holidays:
            for start_s, end_s in self.weekly[d.weekday()]:
                for piece in self._to_utc(d, start_s, end_s):
                    if pieces and pieces[-1][1] == piece[0]:
                        pieces[-1] = (pieces[-1][0], piece[1])
                    else:
                        pieces.append(piece)
        if len(self._days) >= _DAY_CACHE_SIZE:
            self._days.clear()
        self._days[d] = result = tuple(pieces)
        return result

    def _offset(self, at: datetime) -> timedelta:
        offset = at.astimezone(self.zone).utcoffset()
        assert offset is not None
        return offset

    def _to_utc(self, d: date, start_s: int, end_s: int) -> list[Interval]:
        """The instants whose local wall time on `d` lies in [start_s, end_s)."""
        midnight = datetime.combine(d, time())
        a = midnight + timedelta(seconds=start_s)
        b = midnight + timedelta(seconds=end_s)
        offsets = set()
        for wall in (a, b):
            for fold in (0, 1):
                offset = wall.replace(tzinfo=self.zone, fold=fold).utcoffset()
                assert offset is not None
                offsets.add(offset)
        if len(offsets) == 1:
            (o,) = offsets
            return [((a - o).replace(tzinfo=UTC), (b - o).replace(tzinfo=UTC))]
        # An offset change (DST) touches this range: walk the constant-offset segments of
        # real time and keep, in each, the instants whose wall time is in range.
        lo = (a - max(offsets)).replace(tzinfo=UTC)
        hi = (b - min(offsets)).replace(tzinfo=UTC)
        out: list[Interval] = []
        for seg_start, seg_end, o in self._segments(lo, hi):
            s = max(seg_start, (a - o).replace(tzinfo=UTC))
            e = min(seg_end, (b - o).replace(tzinfo=UTC))
            if s < e:
                if out and out[-1][1] == s:
                    out[-1] = (out[-1][0], e)
                else:
                    out.append((s, e))
        return out

    def _segments(
        self, lo: datetime, hi: datetime
    ) -> Iterator[tuple[datetime, datetime, timedelta]]:
        """[lo, hi) cut where the UTC offset changes (zone transitions fall on whole seconds)."""
        start = lo
        while start < hi:
            o = self._offset(start)
            if self._offset(hi) == o and self._offset(hi - timedelta(microseconds=1)) == o:
                yield start, hi, o
                return
            # smallest whole second n in (start, hi] whose offset differs from o
            left = math.floor(start.timestamp())
            right = math.ceil(hi.timestamp())
            while right - left > 1:
                mid = (left + right) // 2
                if self._offset(datetime.fromtimestamp(mid, UTC)) == o:
                    left = mid
                else:
                    right = mid
            end = min(datetime.fromtimestamp(right, UTC), hi)
            yield start, end, o
            start = end

    def forward(self, start: datetime, until: datetime | None = None) -> Iterator[Interval]:
        """Open intervals from `start` on (the first clipped to start), up to `until` if given."""
        d = self.local_date(start) - DAY
        last = self.local_date(until) + DAY if until is not None else None
        idle_days = 0
        while last is None or d <= last:
            found = False
            for s, e in self.day(d):
                if e > start:
                    found = True
                    yield max(s, start), e
            idle_days = 0 if found else idle_days + 1
            if last is None and idle_days > MAX_SEARCH_DAYS:
                raise CalendarError(
                    f"calendar {self.name!r} has no open hours after {start.isoformat()}"
                )
            d += DAY

    def backward(self, end: datetime) -> Iterator[Interval]:
        """Open intervals before `end`, latest first (the first clipped to end)."""
        d = self.local_date(end) + DAY
        idle_days = 0
        while idle_days <= MAX_SEARCH_DAYS:
            found = False
            for s, e in reversed(self.day(d)):
                if s < end:
                    found = True
                    yield s, min(e, end)
            idle_days = 0 if found else idle_days + 1
            d -= DAY
        raise CalendarError(f"calendar {self.name!r} has no open hours before {end.isoformat()}")

    def is_open(self, at: datetime) -> bool:
        return any(s <= at < e for s, e in self.day(self.local_date(at)))


def add_business(hours: BusinessHours | None, start: datetime, amount: timedelta) -> datetime:
    """The earliest instant at which `amount` of business time has passed since `start`
    (negative: the latest instant that far before it)."""
    if hours is None:
        return start + amount
    if amount == ZERO:
        return start
    if amount > ZERO:
        remaining = amount
        for s, e in hours.forward(start):
            if e - s >= remaining:
                return s + remaining
            remaining -= e - s
    else:
        remaining = -amount
        for s, e in hours.backward(start):
            if e - s >= remaining:
                return e - remaining
            remaining -= e - s
    raise CalendarError(f"calendar {hours.name!r} ended")  # pragma: no cover - forward raises


def business_between(hours: BusinessHours | None, start: datetime, end: datetime) -> timedelta:
    """Business time from `start` to `end` (negative if `end` comes first)."""
    if hours is None:
        return end - start
    if end < start:
        return -business_between(hours, end, start)
    total = ZERO
    for s, e in hours.forward(start, until=end):
        if s >= end:
            break
        total += min(e, end) - s
    return total
