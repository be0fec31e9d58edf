"""When pool schedules run: weekdays and wall-clock times of the dashboard's zone, windows past
midnight, daylight-saving changes, and the checks of what an admin types."""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

import pytest

from app.broker.schedule_times import WEEKDAYS, ScheduleTimeError, When, days_text, parse_days, parse_time
from app.broker.schedules import ScheduleError, ScheduleSpec

VILNIUS = ZoneInfo("Europe/Vilnius")


def test_a_weekday_morning_start_in_the_dashboards_zone() -> None:
    when = When(days=WEEKDAYS, at=time(7, 30))
    # Friday 2026-12-04 10:00 UTC is 12:00 in Vilnius (UTC+2 in winter).
    friday_noon = datetime(2026, 12, 4, 10, 0)
    assert when.latest(friday_noon, VILNIUS) == datetime(2026, 12, 4, 5, 30)
    # The next start skips the weekend: Monday 07:30 local.
    assert when.next(friday_noon, VILNIUS) == datetime(2026, 12, 7, 5, 30)
    # On Sunday the latest start is Friday's.
    assert when.latest(datetime(2026, 12, 6, 12, 0), VILNIUS) == datetime(2026, 12, 4, 5, 30)
    # Exactly at the start, it has started.
    assert when.latest(datetime(2026, 12, 7, 5, 30), VILNIUS) == datetime(2026, 12, 7, 5, 30)


def test_the_wall_clock_time_holds_across_daylight_saving() -> None:
    when = When(days=frozenset(range(7)), at=time(7, 30))
    # Vilnius moves to summer time on 2027-03-28: 07:30 local is 05:30 UTC before, 04:30 after.
    assert when.next(datetime(2027, 3, 27, 6, 0), VILNIUS) == datetime(2027, 3, 28, 4, 30)
    assert when.latest(datetime(2027, 3, 27, 6, 0), VILNIUS) == datetime(2027, 3, 27, 5, 30)


def test_a_window_past_midnight_is_open_until_it_closes() -> None:
    night = When(days=frozenset({4}), at=time(22, 0), until=time(2, 0))  # Friday 22:00 to 02:00
    utc = ZoneInfo("UTC")
    assert night.open_window(datetime(2026, 12, 4, 23, 0), utc) == datetime(2026, 12, 4, 22, 0)
    assert night.open_window(datetime(2026, 12, 5, 1, 59), utc) == datetime(2026, 12, 4, 22, 0)
    assert night.open_window(datetime(2026, 12, 5, 2, 0), utc) is None
    assert night.open_window(datetime(2026, 12, 4, 21, 59), utc) is None
    # A schedule without an end has no window.
    assert When(days=WEEKDAYS, at=time(2, 0)).open_window(datetime(2026, 12, 4, 2, 1), utc) is None


def test_days_and_times_are_checked() -> None:
    assert parse_days(["Mon", "tuesday", "fri"]) == frozenset({0, 1, 4})
    assert days_text(WEEKDAYS) == "weekdays" and days_text({0, 2}) == "Mon, Wed"
    assert parse_time("7:05", "at") == time(7, 5)
    for bad in ("24:00", "07:60", "0730", "7.30", "", "07:30:00", "-1:30"):
        with pytest.raises(ScheduleTimeError):
            parse_time(bad, "at")
    with pytest.raises(ScheduleTimeError):
        parse_days(["someday"])
    with pytest.raises(ScheduleTimeError):
        parse_days([])


def test_a_schedule_names_every_field_that_is_wrong() -> None:
    with pytest.raises(ScheduleError) as refused:
        ScheduleSpec.parse({"kind": "keep_ready", "days": [], "at": "25:00", "until": "", "count": "0"})
    assert set(refused.value.errors) == {"days", "at", "until", "count"}
    with pytest.raises(ScheduleError) as same:
        ScheduleSpec.parse(
            {"kind": "keep_ready", "days": ["mon"], "at": "07:30", "until": "07:30", "count": 3}
        )
    assert set(same.value.errors) == {"until"}
    with pytest.raises(ScheduleError) as unknown:
        ScheduleSpec.parse({"kind": "explode", "days": ["mon"], "at": "07:30"})
    assert set(unknown.value.errors) == {"kind"}
    spec = ScheduleSpec.parse({"kind": "power_off", "days": ["mon", "tue"], "at": "20:00", "until": "21:00"})
    assert spec.when.until is None and spec.count == 0, "only a keep-ready window has an end and a count"
