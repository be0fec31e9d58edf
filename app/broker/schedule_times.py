"""When a pool schedule runs: weekdays and a local time of day, in the dashboard's time zone.

A schedule says "on these weekdays at HH:MM" (and, for a keep-ready window, "until HH:MM",
which may be past midnight). Times are wall-clock times of the configured zone, so "07:30"
stays 07:30 across daylight-saving changes; the database and the runner work in naive UTC.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import dates

from app.i18n import N_, current_language
from app.i18n import gettext as _

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_LABELS = (
    N_("Monday"),
    N_("Tuesday"),
    N_("Wednesday"),
    N_("Thursday"),
    N_("Friday"),
    N_("Saturday"),
    N_("Sunday"),
)
WEEKDAYS = frozenset(range(5))
EVERY_DAY = frozenset(range(7))


class ScheduleTimeError(ValueError):
    """A day or time of day that cannot be understood: ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleTimeError("time_zone", _("unknown time zone {name!r}").format(name=name)) from exc


def parse_time(text: str, field: str) -> time:
    """``HH:MM`` (24-hour clock)."""
    parts = text.strip().split(":")
    if len(parts) != 2 or not all(part.isdigit() and 1 <= len(part) <= 2 for part in parts):
        raise ScheduleTimeError(field, _("a time of day as HH:MM, e.g. 07:30"))
    hour, minute = int(parts[0]), int(parts[1])
    if hour > 23 or minute > 59:
        raise ScheduleTimeError(field, _("a time of day between 00:00 and 23:59"))
    return time(hour, minute)


def parse_days(names: Iterable[str]) -> frozenset[int]:
    """Weekday names (``mon`` ... ``sun``) as weekday numbers (Monday is 0)."""
    days: set[int] = set()
    for name in names:
        key = name.strip().lower()[:3]
        if key not in DAY_NAMES:
            raise ScheduleTimeError(
                "days", _("unknown day {name!r}: mon, tue, wed, thu, fri, sat or sun").format(name=name)
            )
        days.add(DAY_NAMES.index(key))
    if not days:
        raise ScheduleTimeError("days", _("choose at least one day"))
    return frozenset(days)


def days_text(days: Iterable[int]) -> str:
    """How the days read in the current language: "weekdays", "every day", "Mon, Wed"."""
    chosen = frozenset(days)
    if chosen == EVERY_DAY:
        return _("every day")
    if chosen == WEEKDAYS:
        return _("weekdays")
    if chosen == frozenset({5, 6}):
        return _("weekends")
    # Babel's abbreviated day names of the language; Monday is 0 in both.
    names = dates.get_day_names("abbreviated", locale=current_language())
    return ", ".join(names[day] for day in sorted(chosen))


@dataclass(frozen=True)
class When:
    """Weekdays and a local time of day, with an optional end (a window)."""

    days: frozenset[int]
    at: time
    until: time | None = None

    @property
    def duration(self) -> timedelta | None:
        """How long a window lasts (past midnight when ``until`` is not after ``at``)."""
        if self.until is None:
            return None
        start = datetime.combine(date(2000, 1, 3), self.at)
        end = datetime.combine(date(2000, 1, 3), self.until)
        if end <= start:
            end += timedelta(days=1)
        return end - start

    def _starts(self, around: datetime, tz: ZoneInfo, days: range) -> Iterator[datetime]:
        local_day = around.replace(tzinfo=UTC).astimezone(tz).date()
        for offset in days:
            day = local_day + timedelta(days=offset)
            if day.weekday() in self.days:
                local = datetime.combine(day, self.at, tzinfo=tz)
                yield local.astimezone(UTC).replace(tzinfo=None)

    def latest(self, now: datetime, tz: ZoneInfo) -> datetime | None:
        """The last start at or before ``now`` (naive UTC) within a week, or None."""
        past = [start for start in self._starts(now, tz, range(-8, 1)) if start <= now]
        return max(past, default=None)

    def next(self, now: datetime, tz: ZoneInfo) -> datetime:
        """The first start after ``now`` (naive UTC)."""
        return min(start for start in self._starts(now, tz, range(0, 9)) if start > now)

    def open_window(self, now: datetime, tz: ZoneInfo) -> datetime | None:
        """The start of the window ``now`` falls in, or None (also for a schedule without an end)."""
        duration = self.duration
        start = self.latest(now, tz)
        if duration is None or start is None:
            return None
        return start if now < start + duration else None


def local(moment: datetime, tz: ZoneInfo) -> datetime:
    """A naive UTC time as the dashboard's zone reads it."""
    return moment.replace(tzinfo=UTC).astimezone(tz)
