"""Is the database there? Outages noticed, requests answered 503, and work redone afterwards.

Every query goes through :mod:`app.db.guarded`, which turns the drivers' "cannot
reach the server" errors (and queries past the time limit) into
:class:`DatabaseUnavailable` and reports them here. :class:`DatabaseHealth` then
probes the database until it answers again, tells its listeners both changes
(the live badge says the service is degraded), and runs the recovery callbacks
once it is back: what events lost meanwhile would have done is done then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from datetime import datetime

import pymysql  # type: ignore[import-untyped]

from app.clock import utcnow

log = logging.getLogger("kvmvdi.db")

# MariaDB client and server errors that mean "the server is not there (now)".
_GONE = {
    1040,  # too many connections
    1047,  # a Galera node outside the primary component (not ready for clients)
    1053,  # server shutdown in progress
    1927,  # connection killed
    2002,  # cannot connect through the socket
    2003,  # cannot connect (refused, unreachable)
    2006,  # server has gone away
    2013,  # lost connection during a query
    2055,  # lost connection at handshake
}
_SQLITE_BUSY = ("locked", "busy", "unable to open", "disk i/o")

# Set in the health task: its probes (and the recoveries) reach the database while it is
# known to be unavailable; everything else is refused at once meanwhile.
_probing: ContextVar[bool] = ContextVar("kvmvdi_db_probing", default=False)

Listener = Callable[[bool], None]
Recovery = Callable[[], Awaitable[None]]


class DatabaseUnavailable(Exception):
    """The database cannot be reached, or did not answer in time: the request may be retried later."""


def log_failure(logger: logging.Logger, message: str, *args: object) -> None:
    """Log the exception being handled after ``message``: a database outage as one warning line
    (the database's health reports the outage itself), anything else with its traceback."""
    exc = sys.exc_info()[1]
    if isinstance(exc, DatabaseUnavailable):
        logger.warning(message + ": %s", *args, exc)
    else:
        logger.exception(message, *args)


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is out of reach (rather than a bad query)."""
    if isinstance(exc, DatabaseUnavailable | TimeoutError | ConnectionError | pymysql.err.InterfaceError):
        return True
    if isinstance(exc, pymysql.err.OperationalError):
        return bool(exc.args) and exc.args[0] in _GONE
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return any(word in text for word in _SQLITE_BUSY)
    return False


class DatabaseHealth:
    """Available or not; probes while it is not, and runs recoveries when it is back."""

    def __init__(self, *, probe_interval: float = 2.0, check_interval: float = 10.0) -> None:
        self.probe_interval = probe_interval
        self.check_interval = check_interval
        self.available = True
        self.since: datetime = utcnow()
        self.reason = ""
        self.outages = 0
        # Completed recoveries (each one after an outage ended).
        self.recoveries = 0
        self._listeners: list[Listener] = []
        self._recoveries: list[Recovery] = []
        self._wake = asyncio.Event()

    @property
    def retry_after(self) -> int:
        """Seconds a client is told to wait before trying again."""
        return max(1, round(self.probe_interval * 2))

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """``listener(available)`` on each change (it must not block)."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def add_recovery(self, recovery: Recovery) -> Callable[[], None]:
        """``await recovery()`` each time the database is back after an outage, in order of adding."""
        self._recoveries.append(recovery)
        return lambda: self._recoveries.remove(recovery)

    def status(self) -> dict[str, str]:
        return {
            "database": "available" if self.available else "unavailable",
            "since": self.since.isoformat() + "Z",
            "reason": self.reason,
        }

    def refuses(self) -> bool:
        """Whether a call must fail at once: the database is known to be unavailable, and this is not
        the probe that finds out when it is back. Waiting each time for the call's time limit would
        add up to a hung request (a request makes several calls), and pile work on a database
        that is coming back."""
        return not self.available and not _probing.get()

    def failed(self, exc: BaseException) -> None:
        """A query found the database out of reach."""
        if not self.available:
            return
        self.available = False
        self.since = utcnow()
        self.reason = f"{type(exc).__name__}: {exc}"[:300]
        self.outages += 1
        log.warning("the database is unavailable (%s): requests get 503 until it is back", self.reason)
        self._notify()
        self._wake.set()

    def _notify(self) -> None:
        for listener in list(self._listeners):
            try:
                listener(self.available)
            except Exception:
                log.exception("database health listener failed")

    @contextlib.asynccontextmanager
    async def watching(self, probe: Callable[[], Awaitable[object]]) -> AsyncIterator[None]:
        """:meth:`run` in the background for the duration of the block."""
        task = asyncio.create_task(self.run(probe), name="database-health")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def run(self, probe: Callable[[], Awaitable[object]]) -> None:
        """Check now and then while available; probe often while not, then recover."""
        _probing.set(True)
        while True:
            self._wake.clear()
            interval = self.check_interval if self.available else self.probe_interval
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            try:
                await probe()
            except Exception as exc:
                if is_unavailable(exc):
                    self.failed(exc)
                else:
                    log.exception("the database probe failed")
                continue
            if not self.available:
                await self._recover()

    async def _recover(self) -> None:
        down_for = (utcnow() - self.since).total_seconds()
        self.available = True
        self.since = utcnow()
        self.reason = ""
        log.warning("the database answers again after %.0f s; redoing what the outage lost", down_for)
        self._notify()
        for recovery in list(self._recoveries):
            try:
                await recovery()
            except Exception as exc:
                if is_unavailable(exc):
                    self.failed(exc)  # gone again: everything is redone after the next outage
                    return
                log.exception("recovering after the database outage failed in %r", recovery)
        self.recoveries += 1
