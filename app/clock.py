"""Time in one place: naive UTC datetimes, as stored in the database."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    # Microseconds dropped: MariaDB DATETIME keeps whole seconds and tests compare round trips.
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)
