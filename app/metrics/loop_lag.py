"""Event-loop lag: how late the loop runs a timer. Blocking work on the loop shows up here first."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from app.background import cancel_and_wait


class LoopLagMonitor:
    def __init__(self, observe: Callable[[float], None], *, interval: float = 0.5) -> None:
        self._observe = observe
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self._interval)
            self._observe(max(0.0, loop.time() - before - self._interval))
