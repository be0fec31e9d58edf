"""A clock tests move forward instead of sleeping.

Every test dashboard runs on a :class:`MovableClock`: the system clock plus an
offset. Time passes as usual (timers, timeouts and the processes around the
dashboard keep working) and jumps when a test calls :meth:`MovableClock.advance`,
so a session, console ticket or lease can expire at once.
"""

from __future__ import annotations

import time

from app.clock import Clock


class MovableClock(Clock):
    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        """Jump ``seconds`` ahead (never back: the monotonic clock must stay monotonic)."""
        if seconds < 0:
            raise ValueError("a clock only moves forward")
        self.offset += seconds
