"""Time in one place.

Everything that decides by time (sessions, console tickets, leases, API tokens,
log-in throttling, background schedules) asks a :class:`Clock` handed to it by
the lifespan, never the system directly, so that tests can move time forward
instead of sleeping. Database timestamps are naive UTC datetimes.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


class Clock:
    """The system clock."""

    def now(self) -> datetime:
        """Naive UTC, as stored in the database."""
        # Microseconds dropped: MariaDB DATETIME keeps whole seconds and tests compare round trips.
        return datetime.fromtimestamp(self.time(), UTC).replace(tzinfo=None, microsecond=0)

    def time(self) -> float:
        """Seconds since the epoch (what signed cookies carry)."""
        return time.time()

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back, for intervals and rates."""
        return time.monotonic()


SYSTEM_CLOCK = Clock()


def utcnow() -> datetime:
    """The system clock's :meth:`Clock.now`, for records whose time decides nothing (audit, created at)."""
    return SYSTEM_CLOCK.now()
