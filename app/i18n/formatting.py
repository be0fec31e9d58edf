"""Dates, times, numbers and sizes as the reader's language writes them (Babel), as Jinja filters.

Times in the database are naive UTC; they are shown in UTC, said so, in the language's format.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from babel import dates, numbers

from app.i18n.context import current_language

BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def format_datetime(value: datetime | str | None, format: str = "medium") -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, str):  # a timestamp read as text
        value = datetime.fromisoformat(value)
    return dates.format_datetime(_aware(value), format, tzinfo=UTC, locale=current_language()) + " UTC"


def format_date(value: date | datetime | None, format: str = "medium") -> str:
    if value is None:
        return ""
    return dates.format_date(value, format, locale=current_language())


def format_time(value: datetime | None, format: str = "medium") -> str:
    if value is None:
        return ""
    return dates.format_time(_aware(value), format, tzinfo=UTC, locale=current_language())


def format_timedelta(value: timedelta | int, *, add_direction: bool = False) -> str:
    return dates.format_timedelta(
        value, threshold=0.95, add_direction=add_direction, locale=current_language()
    )


def format_number(value: float | int | None, digits: int | None = None) -> str:
    if value is None:
        return ""
    if digits is None:
        return numbers.format_decimal(value, locale=current_language())
    pattern = "#,##0." + "0" * digits if digits else "#,##0"
    return numbers.format_decimal(value, format=pattern, locale=current_language())


def format_percent(value: float | None) -> str:
    return "" if value is None else numbers.format_percent(value, locale=current_language())


def format_size(value: float | int | None, unit: str = "B") -> str:
    """A size in binary units ("1,5 GiB" in Lithuanian, "1.5 GiB" in English) of ``value`` ``unit``s."""
    if value is None:
        return ""
    size = float(value) * 1024 ** BINARY_UNITS.index(unit)
    index = 0
    while size >= 1024 and index < len(BINARY_UNITS) - 1:
        size /= 1024
        index += 1
    return f"{format_number(size, 0 if index == 0 else 1)} {BINARY_UNITS[index]}"


FILTERS = {
    "datetime": format_datetime,
    "date": format_date,
    "time": format_time,
    "timedelta": format_timedelta,
    "number": format_number,
    "percent": format_percent,
    "filesize": format_size,
}
