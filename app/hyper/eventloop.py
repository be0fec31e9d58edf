"""libvirt's event loop on asyncio (libvirtaio), made safe for calls from worker threads.

libvirt delivers domain events, keepalives and connection-close notices through an
event-loop implementation that the application registers once per process. We use
libvirtaio so that callbacks run on the dashboard's asyncio loop. But our blocking
libvirt calls run in worker threads, and libvirt calls the event implementation
from whichever thread does the I/O (it toggles the socket's watch around every
RPC). Plain libvirtaio then touches the asyncio loop from foreign threads, which
asyncio forbids (debug mode raises; otherwise timers may start late).

:class:`LibvirtEventLoop` keeps libvirtaio's machinery but moves every change
made from another thread onto the loop, in order, via ``call_soon_threadsafe``.
Watch/timer ids are still handed back synchronously, and a removed watch or timer
stops firing at once (as libvirt's own poll loop guarantees).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import libvirt
import libvirtaio

log = logging.getLogger("kvmvdi.hyper.events")


def _never(*_args: Any) -> None:
    """Stands in for the callback of a timer that libvirt has removed."""


class LibvirtEventLoop(libvirtaio.virEventAsyncIOImpl):
    """libvirtaio with thread-safe handle and timer registration (construct it on the loop's thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self._loop_thread = threading.get_ident()
        self._lock = threading.Lock()
        # Changes queued from other threads and not yet applied on the loop. While any
        # are pending, changes made on the loop thread queue up behind them (keeps order).
        self._queued = 0
        # Every live watch/timer by id, known from the moment its id is returned.
        self._known: dict[int, Any] = {}

    # -- plumbing ---------------------------------------------------------------

    def _run_ordered(self, change: Callable[[], Any]) -> bool:
        """Apply ``change`` now if on the loop thread with nothing queued; else queue it. True if applied."""
        with self._lock:
            if threading.get_ident() == self._loop_thread and self._queued == 0:
                inline = True
            else:
                inline = False
                self._queued += 1
        if inline:
            change()
            return True

        def apply() -> None:
            try:
                change()
            except Exception:  # a broken registration must not stop the loop
                log.exception("libvirt event loop change failed")
            finally:
                with self._lock:
                    self._queued -= 1

        self.loop.call_soon_threadsafe(apply)
        return False

    # -- file handles -----------------------------------------------------------

    def _add_handle(self, fd: int, event: int, cb: Any, opaque: Any) -> int:
        # The descriptor is looked up when the change is applied, on the loop thread.
        callback = libvirtaio.FDCallback(self, cb, opaque, descriptor=None, event=event)
        self._known[callback.iden] = callback

        def attach() -> None:
            callback.descriptor = self.descriptors[fd]
            self.callbacks[callback.iden] = callback
            callback.descriptor.add_handle(callback)
            self._pending_inc()

        self._run_ordered(attach)
        return int(callback.iden)

    def _update_handle(self, watch: int, event: int) -> None:
        callback = self._known.get(watch)
        if callback is None:
            return
        callback.event = event  # takes effect for dispatch immediately

        def apply() -> None:
            if watch in self.callbacks:
                callback.update(event=event)

        self._run_ordered(apply)

    def _remove_handle(self, watch: int) -> int:
        callback = self._known.pop(watch, None)
        if callback is None:
            return -1
        callback.event = 0  # never dispatched again, even before the loop applies the removal
        self._run_ordered(lambda: super(LibvirtEventLoop, self)._remove_handle(watch))
        return 0

    # -- timers -----------------------------------------------------------------

    def _add_timeout(self, timeout: int, cb: Any, opaque: Any) -> int:
        callback = libvirtaio.TimeoutCallback(self, cb, opaque)
        self._known[callback.iden] = callback

        def attach() -> None:
            self.callbacks[callback.iden] = callback
            callback.update(timeout=timeout)
            self._pending_inc()

        self._run_ordered(attach)
        return int(callback.iden)

    def _update_timeout(self, timer: int, timeout: int) -> None:
        callback = self._known.get(timer)
        if callback is None:
            return

        def apply() -> None:
            if timer in self.callbacks:
                if timeout >= 0 and callback._task is not None and timeout != callback.timeout:
                    # libvirtaio keeps sleeping the old interval; restart so the new one counts now.
                    callback.update(timeout=-1)
                callback.update(timeout=timeout)

        self._run_ordered(apply)

    def _remove_timeout(self, timer: int) -> int:
        callback = self._known.pop(timer, None)
        if callback is None:
            return -1
        callback.cb = _never  # a sleeping timer task must not call into libvirt any more
        self._run_ordered(lambda: super(LibvirtEventLoop, self)._remove_timeout(timer))
        return 0


def _silence_default_error_printer() -> None:
    # libvirt prints every error to stderr unless a handler is set; ours become exceptions.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def ensure_libvirt_event_loop() -> LibvirtEventLoop:
    """Register libvirt's event implementation on the running loop, once (idempotent).

    libvirt accepts one event implementation per process. Several dashboards on
    one loop (tests) share it. A loop that has been closed is replaced by the
    running one; a second loop running at the same time is refused.
    """
    loop = asyncio.get_running_loop()
    current = libvirtaio.getCurrentImpl()
    if isinstance(current, LibvirtEventLoop) and current.loop is loop:
        return current
    if current is not None and not current.loop.is_closed():
        raise RuntimeError("libvirt events are already bound to another running event loop")
    _silence_default_error_printer()
    impl = LibvirtEventLoop(loop)
    impl.register()
    libvirtaio._current_impl = impl
    return impl
