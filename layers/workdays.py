"""Working time on the Chinese calendar: deadlines, elapsed shares, traffic lights.

Time limits of urban-management events are counted in working hours or working days
(GB/T 30428; "reply within 5 working days"). A working day is a day the State
Council's calendar says is worked: weekdays that are not statutory holidays, plus the
adjusted working weekends (调休) before and after a holiday. The calendar comes from the
maintained ``chinese-calendar`` package; for a year it does not know yet (the State
Council publishes each year's arrangement in November), Monday–Friday are taken as
working days and :func:`calendar_known` says so.

Office hours are 09:00–12:00 and 13:00–18:00 Beijing time (8 working hours a day).

- ``working_hours`` N: the deadline is the instant N office hours after the start
  (a start outside office hours counts from the next opening).
- ``working_days`` N: the deadline is the close of office (18:00) on the Nth working day
  after the day of the start (the day of the report itself is not counted).

The traffic light of an open event: green under 80 % of its working time used, yellow
from 80 % to the deadline, red after it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

import chinese_calendar

BEIJING = ZoneInfo("Asia/Shanghai")
OFFICE: tuple[tuple[dt.time, dt.time], ...] = (
    (dt.time(9, 0), dt.time(12, 0)),
    (dt.time(13, 0), dt.time(18, 0)),
)
DAY_SECONDS = sum(
    (dt.datetime.combine(dt.date.min, b) - dt.datetime.combine(dt.date.min, a)).seconds
    for a, b in OFFICE
)
YELLOW_AT = 0.8
MAX_DAYS = 3660  # no limit is longer than ten years: a guard against runaway loops

Unit = Literal["working_hours", "working_days"]
Light = Literal["green", "yellow", "red"]


@lru_cache(maxsize=8192)
def is_working_day(day: dt.date) -> bool:
    """Whether ``day`` is worked (holidays and adjusted working weekends included)."""
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:  # a year the package does not cover yet
        return day.weekday() < 5


def calendar_known(day: dt.date) -> bool:
    """Whether the statutory calendar for ``day``'s year is known (else weekdays only)."""
    try:
        chinese_calendar.is_workday(day)
    except NotImplementedError:
        return False
    return True


def _aware(t: dt.datetime) -> dt.datetime:
    if t.tzinfo is None:
        raise ValueError("working-time arithmetic needs timezone-aware instants")
    return t.astimezone(BEIJING)


def _spans(day: dt.date) -> Iterator[tuple[dt.datetime, dt.datetime]]:
    """The office spans of ``day`` (none on a day off), as Beijing-time instants."""
    if not is_working_day(day):
        return
    for a, b in OFFICE:
        yield (dt.datetime.combine(day, a, BEIJING), dt.datetime.combine(day, b, BEIJING))


def add_working_seconds(start: dt.datetime, seconds: float) -> dt.datetime:
    """The instant ``seconds`` of office time after ``start``."""
    if seconds < 0:
        raise ValueError("seconds must not be negative")
    t = _aware(start)
    if seconds == 0:
        return t
    left = float(seconds)
    day = t.date()
    for _ in range(MAX_DAYS):
        for a, b in _spans(day):
            if b <= t:
                continue
            begin = max(a, t)
            span = (b - begin).total_seconds()
            if left <= span:  # a limit ending with a span ends at its close
                return begin + dt.timedelta(seconds=left)
            left -= span
        day += dt.timedelta(days=1)
    raise ValueError("time limit longer than the calendar guard")


def working_seconds(start: dt.datetime, end: dt.datetime) -> float:
    """Office time between two instants (0 when ``end`` is not after ``start``)."""
    a0, b0 = _aware(start), _aware(end)
    if b0 <= a0:
        return 0.0
    total = 0.0
    day = a0.date()
    for _ in range(MAX_DAYS):
        if day > b0.date():
            return total
        for a, b in _spans(day):
            lo, hi = max(a, a0), min(b, b0)
            if hi > lo:
                total += (hi - lo).total_seconds()
        day += dt.timedelta(days=1)
    raise ValueError("interval longer than the calendar guard")


def nth_working_day_after(day: dt.date, n: int) -> dt.date:
    d = day
    for _ in range(MAX_DAYS):
        d += dt.timedelta(days=1)
        if is_working_day(d):
            n -= 1
            if n <= 0:
                return d
    raise ValueError("time limit longer than the calendar guard")


def deadline(start: dt.datetime, limit: int, unit: Unit) -> dt.datetime:
    """When a limit of ``limit`` working hours or days that began at ``start`` runs out."""
    if limit <= 0:
        raise ValueError("a time limit is a positive number")
    if unit == "working_hours":
        return add_working_seconds(start, limit * 3600)
    if unit == "working_days":
        day = nth_working_day_after(_aware(start).date(), limit)
        return dt.datetime.combine(day, OFFICE[-1][1], BEIJING)
    raise ValueError(f"unknown time unit {unit!r}")


def warn_at(start: dt.datetime, due: dt.datetime) -> dt.datetime:
    """The instant 80 % of the working time between ``start`` and ``due`` is used."""
    return add_working_seconds(start, YELLOW_AT * working_seconds(start, due))


def light(now: dt.datetime, warn: dt.datetime, due: dt.datetime) -> Light:
    if now >= due:
        return "red"
    if now >= warn:
        return "yellow"
    return "green"


def shift(due: dt.datetime, paused: dt.datetime, resumed: dt.datetime) -> dt.datetime:
    """The deadline after a suspension from ``paused`` to ``resumed``: the office time
    that was left when the clock stopped is counted again from ``resumed``."""
    left = working_seconds(paused, due)
    return add_working_seconds(resumed, left)
