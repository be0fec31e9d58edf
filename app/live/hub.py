"""In-process publish/subscribe of small JSON state changes.

Producers (hypervisor monitor, libvirt events, operations, broker) call
:meth:`LiveHub.publish`; it never blocks and never awaits, so it is safe on hot
paths. Each browser websocket holds one :class:`Subscription` with a bounded
queue; a subscriber that falls too far behind is marked lagged and its socket
is closed, so the browser reconnects and re-reads current state instead of the
dashboard buffering without bound.

With several replicas, every event is also published on the cluster bus and delivered
by the other replicas to their own browsers. When a replica was out of touch with the
bus (Redis restarted), it closes its browsers' sockets: they reconnect and re-read the
state they may have missed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from app.cluster.bus import Bus, LocalBus

QUEUE_LIMIT = 1000
# Cluster bus channel of live events.
LIVE_CHANNEL = "live"


@dataclass(frozen=True)
class LiveEvent:
    topic: str
    data: dict[str, Any]
    # Delivered to every admin, and to these client user ids.
    admins: bool = True
    user_ids: frozenset[int] = frozenset()
    at: float = field(default_factory=time.time)

    def message(self) -> dict[str, Any]:
        return {"topic": self.topic, "data": self.data, "at": self.at}

    def wire(self) -> dict[str, Any]:
        """The event as the cluster bus carries it."""
        return {**self.message(), "admins": self.admins, "user_ids": sorted(self.user_ids)}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> LiveEvent:
        return cls(
            str(data["topic"]),
            dict(data.get("data") or {}),
            admins=bool(data.get("admins", True)),
            user_ids=frozenset(int(user) for user in data.get("user_ids") or ()),
            at=float(data.get("at") or time.time()),
        )


class Subscription:
    def __init__(self, hub: LiveHub, *, is_admin: bool, user_id: int | None) -> None:
        self._hub = hub
        self.is_admin = is_admin
        self.user_id = user_id
        self.queue: asyncio.Queue[LiveEvent] = asyncio.Queue(QUEUE_LIMIT)
        self.lagged = False
        self._wakeup = asyncio.Event()

    def wants(self, event: LiveEvent) -> bool:
        return (event.admins and self.is_admin) or (
            self.user_id is not None and self.user_id in event.user_ids
        )

    def offer(self, event: LiveEvent) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            # Stop offering at once: the socket gets closed and the browser re-reads current state.
            self.close()

    async def next(self) -> LiveEvent | None:
        """The next event, or ``None`` once this subscriber has lagged or closed."""
        if self.lagged:
            return None
        if not self.queue.empty():
            return self.queue.get_nowait()
        getter = asyncio.ensure_future(self.queue.get())
        waker = asyncio.ensure_future(self._wakeup.wait())
        try:
            await asyncio.wait({getter, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waker.cancel()
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        return None

    def close(self) -> None:
        self._hub._subscribers.discard(self)
        self.lagged = True
        self._wakeup.set()

    async def __aiter__(self) -> AsyncIterator[LiveEvent]:
        while (event := await self.next()) is not None:
            yield event


class LiveHub:
    def __init__(self, *, bus: Bus | None = None) -> None:
        self._subscribers: set[Subscription] = set()
        self.published = 0
        self.received = 0
        self._bus = bus or LocalBus()
        self._bus.subscribe(LIVE_CHANNEL, self._from_elsewhere)
        self._bus.on_resync(self.resync)

    def publish(
        self,
        topic: str,
        data: dict[str, Any],
        *,
        admins: bool = True,
        user_ids: frozenset[int] | set[int] | tuple[int, ...] = (),
        local: bool = False,
    ) -> None:
        """Deliver to this replica's subscribers and, unless ``local`` (news about this replica
        itself, such as its database connection), to every other replica's."""
        event = LiveEvent(topic, data, admins=admins, user_ids=frozenset(user_ids))
        self.published += 1
        self._deliver(event)
        if not local:
            self._bus.publish(LIVE_CHANNEL, event.wire())

    def _deliver(self, event: LiveEvent) -> None:
        for subscriber in tuple(self._subscribers):
            if subscriber.wants(event):
                subscriber.offer(event)

    def _from_elsewhere(self, data: dict[str, Any]) -> None:
        try:
            event = LiveEvent.from_wire(data)
        except (KeyError, TypeError, ValueError):
            return
        self.received += 1
        self._deliver(event)

    def resync(self) -> None:
        """Events may have been missed: every browser reconnects and re-reads the current state."""
        for subscriber in tuple(self._subscribers):
            subscriber.close()

    def subscribe(self, *, is_admin: bool, user_id: int | None = None) -> Subscription:
        subscription = Subscription(self, is_admin=is_admin, user_id=user_id)
        self._subscribers.add(subscription)
        return subscription

    def user_subscriber_count(self, user_id: int) -> int:
        """Open subscriptions of one user (their /live sockets)."""
        return sum(1 for s in self._subscribers if s.user_id == user_id)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @property
    def client_subscriber_count(self) -> int:
        return sum(1 for subscriber in tuple(self._subscribers) if not subscriber.is_admin)

    @property
    def admin_subscriber_count(self) -> int:
        """Connected admin browsers (work done only for admin pages can pause without them)."""
        return sum(1 for subscriber in tuple(self._subscribers) if subscriber.is_admin)

    def close(self) -> None:
        for subscriber in tuple(self._subscribers):
            subscriber.close()
