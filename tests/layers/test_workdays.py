"""Working time on the Chinese calendar (holidays and adjusted working weekends)."""

from __future__ import annotations

import datetime as dt

import pytest

from layers import workdays as wd

B = wd.BEIJING


def t(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=B)


def test_national_day_2025_and_its_adjusted_working_weekends() -> None:
    # 2025: Oct 1-8 off; Sunday Sep 28 and Saturday Oct 11 are worked
    assert wd.is_working_day(dt.date(2025, 9, 28))
    assert not wd.is_working_day(dt.date(2025, 10, 1))
    assert not wd.is_working_day(dt.date(2025, 10, 8))
    assert wd.is_working_day(dt.date(2025, 10, 11))
    assert not wd.is_working_day(dt.date(2025, 10, 12))
    assert not wd.is_working_day(dt.date(2025, 9, 27))  # an ordinary Saturday


def test_five_working_days_across_national_day() -> None:
    # reported Tuesday Sep 30 2025: the next working days are Oct 9, 10, 11 (Sat, worked),
    # 13, 14 -> due at the close of office on Oct 14
    assert wd.deadline(t(2025, 9, 30, 10), 5, "working_days") == t(2025, 10, 14, 18)
    # reported Friday Sep 26: Sep 28 (Sunday, worked), 29, 30, Oct 9, 10
    assert wd.deadline(t(2025, 9, 26, 16), 5, "working_days") == t(2025, 10, 10, 18)


def test_working_hours_skip_lunch_nights_and_holidays() -> None:
    assert wd.deadline(t(2025, 9, 29, 11), 2, "working_hours") == t(2025, 9, 29, 14)
    # 17:00 on Sep 30 (last day before the holiday): one hour today, one on Oct 9
    assert wd.deadline(t(2025, 9, 30, 17), 2, "working_hours") == t(2025, 10, 9, 10)
    # reported at night: counts from the next opening
    assert wd.deadline(t(2025, 9, 29, 22), 1, "working_hours") == t(2025, 9, 30, 10)
    # a limit that fills the working day ends at its close, not the next morning
    assert wd.deadline(t(2025, 9, 29, 9), 8, "working_hours") == t(2025, 9, 29, 18)


def test_working_seconds_is_the_inverse_of_adding() -> None:
    start = t(2025, 9, 26, 15, 30)
    for hours in (1, 3, 8, 17, 40, 100):
        end = wd.add_working_seconds(start, hours * 3600)
        assert wd.working_seconds(start, end) == pytest.approx(hours * 3600)
    assert wd.working_seconds(t(2025, 10, 1, 9), t(2025, 10, 8, 18)) == 0


def test_traffic_light_and_yellow_at_eighty_percent() -> None:
    start = t(2025, 9, 29, 9)
    due = wd.deadline(start, 10, "working_hours")  # Sep 30, 11:00
    warn = wd.warn_at(start, due)
    assert wd.working_seconds(start, warn) == pytest.approx(8 * 3600)
    assert warn == t(2025, 9, 29, 18)
    assert wd.light(t(2025, 9, 29, 17), warn, due) == "green"
    assert wd.light(t(2025, 9, 30, 10), warn, due) == "yellow"
    assert wd.light(t(2025, 9, 30, 11), warn, due) == "red"


def test_suspension_shifts_the_deadline_by_the_time_left() -> None:
    due = t(2025, 9, 30, 11)
    # paused with 3 working hours left (Sep 30 9-11 plus 17-18 on Sep 29)
    new = wd.shift(due, t(2025, 9, 29, 17), t(2025, 10, 9, 9))
    assert new == t(2025, 10, 9, 12)  # 9-12: the morning span holds the three hours


def test_years_the_package_does_not_know_fall_back_to_weekdays() -> None:
    far = dt.date(2099, 6, 1)  # a Monday
    assert not wd.calendar_known(far)
    assert wd.is_working_day(far)
    assert not wd.is_working_day(dt.date(2099, 6, 6))  # Saturday


def test_naive_times_and_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        wd.deadline(dt.datetime(2025, 9, 29, 9), 1, "working_hours")
    with pytest.raises(ValueError, match="positive"):
        wd.deadline(t(2025, 9, 29, 9), 0, "working_days")
