"""What every replica must hear at once: a message bus over Redis pub/sub.

A replica acts on its own state directly (its browsers, its consoles) and publishes a
message so that the *other* replicas do the same: live messages, console revocations,
inventory changes. Messages carry their origin; a replica ignores its own.

Publishing never waits for Redis: messages go through a bounded queue to one sender
task. The subscriber task reconnects with back-off after Redis went away; since
messages sent meanwhile are lost, it then runs the *resync* hooks (the live hub closes
its browsers' sockets so that they re-read current state; console state is written
again). What must not be lost rests on the database besides the bus (a revoked console
ticket is also found revoked by the periodic check, see :mod:`app.cluster.node`).

One process (no Redis) has no one to tell: :class:`LocalBus` drops every message.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from redis import asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("kvmvdi.cluster.bus")

PREFIX = "kvmvdi:"
QUEUE_LIMIT = 10_000
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 2.0

Handler = Callable[[dict[str, Any]], Awaitable[None] | None]
Hook = Callable[[], Awaitable[None] | None]


class Bus(Protocol):
    @property
    def connected(self) -> bool: ...

    def subscribe(self, channel: str, handler: Handler) -> None: ...

    def publish(self, channel: str, message: dict[str, Any]) -> None: ...

    def on_resync(self, hook: Hook) -> None: ...

    async def ping(self) -> bool: ...


class LocalBus:
    """One process: nobody else to tell."""

    connected = True

    def subscribe(self, channel: str, handler: Handler) -> None:
        pass

    def publish(self, channel: str, message: dict[str, Any]) -> None:
        pass

    def on_resync(self, hook: Hook) -> None:
        pass

    async def ping(self) -> bool:
        return True


async def _call(function: Callable[..., Any], *args: Any) -> None:
    result = function(*args)
    if inspect.isawaitable(result):
        await result


class RedisBus:
    def __init__(self, url: str, *, origin: str) -> None:
        self.origin = origin
        # One client (a connection pool) for publishing and for the keys other modules keep.
        self.redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=5
        )
        self._url = url
        self._handlers: dict[str, list[Handler]] = {}
        self._resync: list[Hook] = []
        self._outbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(QUEUE_LIMIT)
        self._tasks: list[asyncio.Task[None]] = []
        self._work: set[asyncio.Task[None]] = set()
        self._connected = asyncio.Event()
        self.subscribed_once = asyncio.Event()
        self.dropped = 0
        self.received = 0
        self.reconnections = 0

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def subscribe(self, channel: str, handler: Handler) -> None:
        self._handlers.setdefault(channel, []).append(handler)

    def on_resync(self, hook: Hook) -> None:
        self._resync.append(hook)

    def publish(self, channel: str, message: dict[str, Any]) -> None:
        payload = json.dumps({"origin": self.origin, "data": message}, default=str).encode()
        try:
            self._outbox.put_nowait((PREFIX + channel, payload))
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("cluster bus: outgoing queue full, %s message dropped", channel)

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.redis.ping(), 2))
        except (RedisError, OSError, TimeoutError):
            return False

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen(), name="cluster-bus-listen"),
            asyncio.create_task(self._send(), name="cluster-bus-send"),
        ]
        # Serve only once subscribed: a replica must not miss what others say from the start.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.subscribed_once.wait(), 10)

    async def stop(self) -> None:
        # What is queued goes out first (a revocation said just before a stop still counts).
        if self.connected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox.join(), 2)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._work, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.redis.aclose()

    async def _send(self) -> None:
        while True:
            channel, payload = await self._outbox.get()
            try:
                await self.redis.publish(channel, payload)
            except (RedisError, OSError) as exc:
                # Redis is away: the others resync when they are back in touch, so this is lost.
                self.dropped += 1
                log.warning("cluster bus: publishing on %s failed: %s", channel, exc)
                await self._connected.wait()
            finally:
                self._outbox.task_done()

    async def _listen(self) -> None:
        backoff = BACKOFF_FIRST
        first = True
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                # Every channel of ours by pattern: components subscribe after the bus started
                # (it starts first, so that nothing said meanwhile is missed), and a channel
                # subscribed by name then would never be heard.
                await pubsub.psubscribe(PREFIX + "*")
                backoff = BACKOFF_FIRST
                if not first:
                    self.reconnections += 1
                    log.warning("cluster bus: back in touch with Redis; resynchronising")
                    await self._run_resync()
                first = False
                # Connected only once resynchronised: whoever waits for it finds the
                # browsers' sockets already asked to reconnect.
                self._connected.set()
                self.subscribed_once.set()
                while True:
                    message = await pubsub.get_message(timeout=5.0)
                    if message is not None:
                        self._dispatch(message)
            except (RedisError, OSError) as exc:
                if self._connected.is_set():
                    log.warning("cluster bus: lost Redis (%s); reconnecting", exc)
                self._connected.clear()
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _run_resync(self) -> None:
        for hook in self._resync:
            try:
                await _call(hook)
            except Exception:
                log.exception("cluster bus: resync hook failed")

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("type") != "pmessage":
            return
        channel = message["channel"]
        channel = (channel.decode() if isinstance(channel, bytes) else str(channel))[len(PREFIX) :]
        try:
            envelope = json.loads(message["data"])
        except (TypeError, ValueError):
            log.warning("cluster bus: unreadable message on %s", channel)
            return
        if envelope.get("origin") == self.origin:
            return
        self.received += 1
        for handler in self._handlers.get(channel, ()):
            # Plain handlers run now, in arrival order (live messages keep their order).
            try:
                result = handler(envelope["data"])
            except Exception:
                log.exception("cluster bus: handling a %s message failed", channel)
                continue
            if inspect.isawaitable(result):
                task = asyncio.get_running_loop().create_task(self._finish(result, channel))
                self._work.add(task)
                task.add_done_callback(self._work.discard)

    @staticmethod
    async def _finish(result: Awaitable[None], channel: str) -> None:
        try:
            await result
        except Exception:
            log.exception("cluster bus: handling a %s message failed", channel)
