"""One libvirt connection, whose blocking calls run on its own bounded worker threads.

libvirt connections are thread-safe; the pool only keeps the event loop free and
bounds how much one hypervisor can occupy. Health pings use a separate thread so
that a slow domain start never makes a healthy hypervisor look dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import libvirt

from app.hyper.errors import (
    DomainNotFound,
    HypervisorError,
    HypervisorUnavailable,
    InvalidDomainState,
    NotSupported,
    SnapshotNotFound,
)

log = logging.getLogger("kvmvdi.hyper.libvirt")

T = TypeVar("T")

_CONNECTION_CODES = frozenset(
    {
        libvirt.VIR_ERR_NO_CONNECT,
        libvirt.VIR_ERR_INVALID_CONN,
        libvirt.VIR_ERR_RPC,
        libvirt.VIR_ERR_SYSTEM_ERROR,
    }
)
_CLOSE_REASONS = {
    libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "connection error",
    libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "connection closed by the hypervisor",
    libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive timeout",
    libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed by the dashboard",
}


def is_connection_error(exc: libvirt.libvirtError) -> bool:
    return exc.get_error_domain() in (libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE) or (
        exc.get_error_code() in _CONNECTION_CODES
    )


def libvirt_message(exc: libvirt.libvirtError) -> str:
    return (exc.get_error_message() or str(exc)).strip()


def translate(exc: libvirt.libvirtError) -> HypervisorError:
    """A libvirt error as one of our exception types (the message is libvirt's own)."""
    code = exc.get_error_code()
    message = libvirt_message(exc)
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return DomainNotFound(message)
    if code == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
        return SnapshotNotFound(message)
    if code == libvirt.VIR_ERR_OPERATION_INVALID:
        return InvalidDomainState(message)
    if code == libvirt.VIR_ERR_NO_SUPPORT:
        return NotSupported(message)
    if is_connection_error(exc):
        return HypervisorUnavailable(message)
    return HypervisorError(message)


class LibvirtConnection:
    def __init__(self, uri: str, label: str, *, threads: int = 4) -> None:
        self.uri = uri
        self.label = label
        self._calls = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"libvirt-{label}")
        self._health = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"libvirt-health-{label}")
        self._conn: libvirt.virConnect | None = None
        self._callback_ids: list[int] = []
        self._close_callback = False
        self._closed = False
        self.lost = asyncio.Event()
        self.lost_reason = ""

    @property
    def conn(self) -> libvirt.virConnect:
        if self._conn is None:
            raise HypervisorUnavailable(f"{self.label}: not connected")
        return self._conn

    async def _in_thread(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, fn, *args)

    async def open(self, timeout: float) -> None:  # noqa: ASYNC109 -- the thread outlives a cancel
        """Open the connection (raises :class:`libvirt.libvirtError` or :class:`TimeoutError`)."""
        future = self._in_thread(self._calls, libvirt.open, self.uri)
        self._conn = await asyncio.wait_for(future, timeout)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on a worker thread; libvirt errors become HypervisorError types."""
        if self.lost.is_set():
            raise HypervisorUnavailable(f"{self.label}: {self.lost_reason or 'connection lost'}")
        conn = self.conn
        try:
            return await self._in_thread(self._calls, fn, conn, *args)
        except libvirt.libvirtError as exc:
            # A dead connection is noticed by the close callback, keepalive or the health
            # ping; nothing here may block the loop on the connection's lock.
            raise translate(exc) from exc

    async def ping(self, timeout: float) -> None:  # noqa: ASYNC109 -- the thread outlives a cancel
        """A cheap round trip to libvirtd on the health thread; raises on failure or timeout."""
        conn = self.conn
        await asyncio.wait_for(self._in_thread(self._health, conn.getLibVersion), timeout)

    def mark_lost(self, reason: str) -> None:
        if not self.lost.is_set():
            self.lost_reason = reason
            self.lost.set()

    async def watch(
        self,
        *,
        keepalive: tuple[int, int],
        on_lifecycle: Callable[..., None],
        on_reboot: Callable[..., None],
    ) -> None:
        """Keepalive, close notification and domain event callbacks (call once, after open)."""
        loop = asyncio.get_running_loop()

        def closed(_conn: libvirt.virConnect, reason: int, _opaque: Any) -> None:
            text = _CLOSE_REASONS.get(reason, f"closed (reason {reason})")
            loop.call_soon_threadsafe(self.mark_lost, text)

        def register(conn: libvirt.virConnect) -> None:
            interval, count = keepalive
            try:
                conn.setKeepAlive(interval, count)
            except libvirt.libvirtError as exc:
                # Local drivers (test:///) have no keepalive; remote ones do.
                log.debug("%s: no keepalive: %s", self.label, libvirt_message(exc))
            with contextlib.suppress(libvirt.libvirtError):
                conn.registerCloseCallback(closed, None)
                self._close_callback = True
            self._callback_ids.append(
                conn.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._while_open(on_lifecycle), None
                )
            )
            self._callback_ids.append(
                conn.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._while_open(on_reboot), None
                )
            )

        await self.call(register)

    def _while_open(self, callback: Callable[..., None]) -> Callable[..., None]:
        """``callback``, silent once the dashboard has closed this connection (a lost connection is
        closed without deregistering: its events, if any still come, are not this connection's)."""

        def deliver(*args: Any) -> None:
            if not self._closed:
                callback(*args)

        return deliver

    async def close(self) -> None:
        """Deregister callbacks and close; never raises. The worker threads are released."""
        conn, self._conn = self._conn, None
        self._closed = True
        # Deregistering on a connection libvirt has already closed (keepalive, link cut, fencing)
        # races its own teardown of that connection and has crashed the process in libvirt:
        # a lost connection is only closed; its callbacks go with it.
        deregister = not self.lost.is_set()
        self.mark_lost("closed by the dashboard")
        if conn is not None:

            def shutdown() -> None:
                if deregister:
                    for callback_id in self._callback_ids:
                        with contextlib.suppress(libvirt.libvirtError):
                            conn.domainEventDeregisterAny(callback_id)
                    if self._close_callback:
                        with contextlib.suppress(libvirt.libvirtError):
                            conn.unregisterCloseCallback()
                with contextlib.suppress(libvirt.libvirtError):
                    conn.close()

            try:
                await asyncio.wait_for(self._in_thread(self._calls, shutdown), 15)
            except (TimeoutError, RuntimeError):
                log.warning("%s: libvirt connection did not close cleanly", self.label)
        self._callback_ids.clear()
        self._calls.shutdown(wait=False, cancel_futures=True)
        self._health.shutdown(wait=False, cancel_futures=True)
