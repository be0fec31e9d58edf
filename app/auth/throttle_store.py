"""Where log-in attempts are counted: a small async interface and its in-memory implementation.

An attempt is *acquired* before anything about it is checked: one atomic step
looks at every key's count and, if no limit is reached, records the attempt as
pending under each key. A pending attempt already counts where the limit says so,
which is how a burst of parallel guesses is counted in full. The attempt is then
*settled*: a failure stays counted for the window, anything else is taken back.
A refusal says whether the key is full of failures (wait ``retry_after``) or only
of attempts still being checked (``pending``: one of them settling may make room).

The in-memory store serves one process (no ``await`` inside a step, so each step
is atomic on the event loop). A store shared by several dashboards (Redis, say)
implements the same three calls with the same atomicity.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Limit:
    """At most ``max_attempts`` counted attempts under ``key`` in the window."""

    key: str
    max_attempts: int
    # Whether attempts still being checked count toward the limit (else only settled failures).
    count_pending: bool = True


@dataclass(frozen=True)
class Acquired:
    attempt: str
    keys: tuple[str, ...]


@dataclass(frozen=True)
class Refused:
    # Seconds until the oldest counted attempt of a full key leaves the window.
    retry_after: float
    # Full only because of attempts still being checked: one of them settling may make room.
    pending: bool = False


class ThrottleStore(Protocol):
    async def acquire(self, limits: Sequence[Limit], *, window: float) -> Acquired | Refused:
        """Atomically: refuse if a limit is reached, else record one pending attempt under every key."""
        ...

    async def settle(self, acquired: Acquired, *, failed: bool) -> None:
        """A failure stays counted until it leaves the window; otherwise the attempt is taken back."""
        ...

    async def clear(self, key: str) -> None:
        """Forget the failures counted under ``key`` (attempts still pending stay)."""
        ...


# Forget expired keys once this many are tracked.
SWEEP_THRESHOLD = 10_000


class MemoryThrottleStore:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # key -> attempt id -> (when, still pending); insertion order is time order.
        self._entries: dict[str, dict[str, tuple[float, bool]]] = {}
        self._ids = itertools.count(1)
        self._next_sweep = 0.0
        self._window = 0.0

    def _live(self, key: str, now: float) -> dict[str, tuple[float, bool]]:
        entries = self._entries.get(key)
        if entries is None:
            return {}
        for attempt, (when, _pending) in list(entries.items()):
            if now - when < self._window:
                break
            del entries[attempt]
        if not entries:
            del self._entries[key]
        return entries

    async def acquire(self, limits: Sequence[Limit], *, window: float) -> Acquired | Refused:
        now = self._clock()
        self._window = window
        self._maybe_sweep(now)
        wait, full_of_pending = 0.0, False
        for limit in limits:
            entries = self._live(limit.key, now).values()
            failures = [when for when, pending in entries if not pending]
            if len(failures) >= limit.max_attempts:
                wait = max(wait, window - (now - failures[0]))
            elif limit.count_pending and len(entries) >= limit.max_attempts:
                full_of_pending = True
        if wait > 0:
            return Refused(retry_after=wait)
        if full_of_pending:
            return Refused(retry_after=0.0, pending=True)
        attempt = str(next(self._ids))
        keys = tuple(dict.fromkeys(limit.key for limit in limits))
        for key in keys:
            self._entries.setdefault(key, {})[attempt] = (now, True)
        return Acquired(attempt=attempt, keys=keys)

    async def settle(self, acquired: Acquired, *, failed: bool) -> None:
        for key in acquired.keys:
            entries = self._entries.get(key)
            if entries is None or acquired.attempt not in entries:
                continue
            if failed:
                entries[acquired.attempt] = (entries[acquired.attempt][0], False)
            else:
                del entries[acquired.attempt]
                if not entries:
                    del self._entries[key]

    async def clear(self, key: str) -> None:
        entries = self._entries.get(key)
        if entries is None:
            return
        for attempt, (_when, pending) in list(entries.items()):
            if not pending:
                del entries[attempt]
        if not entries:
            del self._entries[key]

    def tracked_keys(self) -> int:
        return len(self._entries)

    def _maybe_sweep(self, now: float) -> None:
        # Guessing many distinct names must not grow memory without bound; at most one
        # full pass per second, so a flood does not make every attempt pay for one.
        if len(self._entries) < SWEEP_THRESHOLD or now < self._next_sweep:
            return
        self._next_sweep = now + 1.0
        for key in tuple(self._entries):
            self._live(key, now)
