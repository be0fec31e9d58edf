"""Login throttling: too many failures per user name or per client address → 429.

Kept in memory: the dashboard is one process, and a restart forgetting a few
minutes of failures is acceptable. Both keys count separately: one address
guessing many names is stopped by the address key, many addresses guessing one
name by the user-name key. A blocked key unblocks by itself once its oldest
failure leaves the window (the answer's ``Retry-After``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

# Forget expired keys once this many are tracked.
SWEEP_THRESHOLD = 10_000


class LoginThrottle:
    def __init__(
        self, *, max_failures: int = 5, window: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._next_sweep = 0.0

    def _recent(self, key: str) -> deque[float]:
        now = self._clock()
        failures = self._failures.get(key)
        if failures is None:
            return deque()
        while failures and now - failures[0] >= self.window:
            failures.popleft()
        if not failures:
            del self._failures[key]
        return failures

    def retry_after(self, *, username: str, address: str) -> int:
        """Seconds until another attempt is allowed; 0 when allowed now."""
        wait = 0.0
        for key in (f"user:{username.lower()}", f"addr:{address}"):
            failures = self._recent(key)
            if len(failures) >= self.max_failures:
                wait = max(wait, self.window - (self._clock() - failures[0]))
        return int(wait) + 1 if wait > 0 else 0

    def failed(self, *, username: str, address: str) -> None:
        now = self._clock()
        if len(self._failures) >= SWEEP_THRESHOLD and now >= self._next_sweep:
            self._sweep()
            # At most one sweep per second: a flood must not make every failure cost a full pass.
            self._next_sweep = now + 1.0
        for key in (f"user:{username.lower()}", f"addr:{address}"):
            self._recent(key)
            self._failures.setdefault(key, deque()).append(now)

    def _sweep(self) -> None:
        # Guessing many distinct names must not grow memory without bound.
        for key in tuple(self._failures):
            self._recent(key)

    def succeeded(self, *, username: str) -> None:
        self._failures.pop(f"user:{username.lower()}", None)
