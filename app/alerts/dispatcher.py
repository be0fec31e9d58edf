"""Alert delivery that never blocks whoever raises an alert.

:meth:`AlertDispatcher.submit` is a plain call: it applies the rate limit and
puts the alert on each channel's bounded queue, or drops it (counted, logged)
when a queue is full. Each channel has one worker task that sends in order and
retries a failed delivery with exponential back-off (``retry_initial`` doubling
to ``retry_max``, ``retries`` times); a channel that stays down never delays
another.

Rate limit: alerts of one key (a hypervisor's down and back share one) go out at
most once per ``rate_limit`` seconds. One that arrives inside the window is held
back, and when the window ends the latest held-back alert goes out with the
number held back: the last word is never lost, a flapping hypervisor is not a
mail storm.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from app.alerts.model import Alert
from app.background import cancel_and_wait
from app.observers import Observers
from app.settings import AlertSettings

log = logging.getLogger("kvmvdi.alerts")


class Channel(Protocol):
    name: str

    async def send(self, alert: Alert) -> None: ...


@dataclass(frozen=True)
class Delivery:
    """The outcome of one alert on one channel: sent, failed (retries exhausted) or dropped (queue full)."""

    alert: Alert
    channel: str
    result: str
    attempts: int = 0
    error: str = ""


DeliveryListener = Callable[[Delivery], None]


@dataclass(frozen=True)
class Submitted:
    """What became of one submitted alert: put on these channels' queues (``dropped`` where a queue
    was full), or ``held_back`` by the rate limit (it goes out when its window ends)."""

    queued: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    held_back: bool = False

    def details(self) -> dict[str, Any]:
        """What the audit log keeps of it."""
        return {"queued": list(self.queued), "dropped": list(self.dropped), "held_back": self.held_back}


@dataclass
class _Window:
    until: float
    held: Alert | None = None
    count: int = 0
    timer: asyncio.TimerHandle | None = None


class _Worker:
    def __init__(self, channel: Channel, settings: AlertSettings, report: Callable[[Delivery], None]) -> None:
        self.channel = channel
        self._settings = settings
        self._report = report
        self.queue: asyncio.Queue[Alert] = asyncio.Queue(settings.queue_size)
        self.task: asyncio.Task[None] | None = None
        self.last_error = ""

    async def run(self) -> None:
        while True:
            alert = await self.queue.get()
            await self._deliver(alert)

    async def _deliver(self, alert: Alert) -> None:
        delay = self._settings.retry_initial
        attempts = 0
        while True:
            attempts += 1
            try:
                await self.channel.send(alert)
            except Exception as exc:
                self.last_error = str(exc)
                if attempts > self._settings.retries:
                    log.error(
                        "alert %s (%s) not delivered by %s after %d attempts: %s",
                        alert.kind, alert.subject, self.channel.name, attempts, exc,
                    )  # fmt: skip
                    self._report(Delivery(alert, self.channel.name, "failed", attempts, str(exc)))
                    return
                log.warning(
                    "alert %s (%s) by %s failed (attempt %d), retrying in %.1f s: %s",
                    alert.kind, alert.subject, self.channel.name, attempts, delay, exc,
                )  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._settings.retry_max)
                continue
            self.last_error = ""
            log.info("alert %s (%s) sent by %s", alert.kind, alert.subject, self.channel.name)
            self._report(Delivery(alert, self.channel.name, "sent", attempts))
            return


class AlertDispatcher:
    def __init__(
        self,
        settings: AlertSettings,
        channels: Sequence[Channel],
        *,
        listeners: Sequence[DeliveryListener] = (),
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._settings = settings
        self._listeners = Observers("alert delivery", listeners)
        self._workers = [_Worker(channel, settings, self._report) for channel in channels]
        self._windows: dict[str, _Window] = {}
        self._clock = clock
        self.delivered: dict[tuple[str, str], int] = {}

    @property
    def channels(self) -> list[str]:
        return [worker.channel.name for worker in self._workers]

    def last_errors(self) -> dict[str, str]:
        return {worker.channel.name: worker.last_error for worker in self._workers}

    async def start(self) -> None:
        for worker in self._workers:
            worker.task = asyncio.create_task(worker.run(), name=f"alerts-{worker.channel.name}")

    async def stop(self) -> None:
        for window in self._windows.values():
            if window.timer is not None:
                window.timer.cancel()
        for worker in self._workers:
            await cancel_and_wait(worker.task)
            worker.task = None

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    # -- submitting -------------------------------------------------------------------------

    def submit(self, alert: Alert) -> Submitted:
        """Rate-limit and enqueue ``alert``; never blocks, never raises for a full queue."""
        key = alert.limit_key
        now = self._now()
        window = self._windows.get(key)
        if window is not None and now < window.until:
            window.held = alert
            window.count += 1
            if window.timer is None:
                loop = asyncio.get_running_loop()
                window.timer = loop.call_later(window.until - now, self._window_ended, key)
            log.info("alert %s (%s) held back by the rate limit", alert.kind, alert.subject)
            return Submitted(held_back=True)
        self._windows[key] = _Window(until=now + self._settings.rate_limit)
        dropped = self._enqueue(alert)
        return Submitted(queued=tuple(name for name in self.channels if name not in dropped), dropped=dropped)

    def _window_ended(self, key: str) -> None:
        window = self._windows.pop(key, None)
        if window is None or window.held is None:
            return
        # The latest of the held-back alerts goes out now and opens a new window.
        self._windows[key] = _Window(until=self._now() + self._settings.rate_limit)
        self._enqueue(window.held.with_suppressed(window.count - 1))

    def _enqueue(self, alert: Alert) -> tuple[str, ...]:
        """Put ``alert`` on every channel's queue; the names of those whose queue was full."""
        log.log(logging.INFO if alert.severity == "info" else logging.WARNING, "alert: %s", alert.title)
        dropped: list[str] = []
        for worker in self._workers:
            try:
                worker.queue.put_nowait(alert)
            except asyncio.QueueFull:
                dropped.append(worker.channel.name)
                log.error(
                    "alert %s (%s) dropped: the %s queue is full",
                    alert.kind,
                    alert.subject,
                    worker.channel.name,
                )
                self._report(Delivery(alert, worker.channel.name, "dropped"))
        return tuple(dropped)

    def _report(self, delivery: Delivery) -> None:
        counted = (delivery.channel, delivery.result)
        self.delivered[counted] = self.delivered.get(counted, 0) + 1
        self._listeners(delivery)
