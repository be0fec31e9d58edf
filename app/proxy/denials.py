"""Audit records of unauthenticated console failures (garbage or expired tickets), rate-limited.

Anyone can send the gateway or the console websocket a made-up ticket as fast
as they like: one audit row each would let them grow the table without bound.
So per client address the first refusal of a window is written at once, the
rest of the window only counted, and one summary row with the count written
when the window ends. The addresses tracked at once are bounded too; beyond
that, refusals are counted under ``*``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.audit import AuditLog

log = logging.getLogger("kvmvdi.proxy")

ACTION = "console.ticket_refused"
OVERFLOW = "*"


@dataclass
class _Window:
    started: float
    suppressed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


class DeniedConsoleAudit:
    def __init__(
        self,
        audit: AuditLog,
        *,
        window: float = 60.0,
        max_addresses: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._audit = audit
        self.window = window
        self._max = max_addresses
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._flush_periodically(), name="console-denials")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush(everything=True)

    async def refused(self, client_address: str, *, via: str, reason: str, target: str = "") -> None:
        """A console refused for want of a valid ticket: audited now, or counted for the summary."""
        now = self._clock()
        key = client_address
        if key not in self._windows and len(self._windows) >= self._max:
            key = OVERFLOW
        current = self._windows.get(key)
        if current is not None and now - current.started < self.window:
            current.suppressed += 1
            current.reasons[reason] = current.reasons.get(reason, 0) + 1
            return
        if current is not None:
            await self._summarise(key, current)
        self._windows[key] = _Window(started=now)
        await self._write(key, via=via, reason=reason, target=target)

    async def flush(self, *, everything: bool = False) -> None:
        """Write the summaries of windows that ended (all of them with ``everything``)."""
        now = self._clock()
        for key, window in list(self._windows.items()):
            if everything or now - window.started >= self.window:
                del self._windows[key]
                await self._summarise(key, window)

    async def _summarise(self, key: str, window: _Window) -> None:
        if window.suppressed:
            await self._write(
                key,
                via="",
                reason="repeated",
                suppressed=window.suppressed,
                reasons=dict(window.reasons),
                window_seconds=self.window,
            )

    async def _write(self, key: str, **details: Any) -> None:
        with contextlib.suppress(Exception):
            await self._audit.record(ACTION, client_address=key if key != OVERFLOW else "", **details)

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.window / 2)
            try:
                await self.flush()
            except Exception:
                log.exception("could not write the summary of refused console tickets")
