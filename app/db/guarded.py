"""Every database call bounded in time, and an unreachable database told apart from a bad query.

``databases`` hands each query to a backend connection; here that connection is
wrapped so that every call (acquiring a connection, a query, a transaction's
start and end) runs within ``timeout`` seconds, and a driver error that means
"the server is not there" becomes :class:`~app.db.health.DatabaseUnavailable`,
reported to the :class:`~app.db.health.DatabaseHealth`. A connection that timed
out or lost its server is closed, never handed to the next query. While the health knows
the database is unavailable, calls fail at once (but commits, rollbacks and releases, which end
what was started).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable
from typing import Any, TypeVar

from app.db.health import DatabaseHealth, DatabaseUnavailable, is_unavailable

log = logging.getLogger("kvmvdi.db")

T = TypeVar("T")


class _Wrapper:
    """Passes through whatever it does not guard itself."""

    def __init__(self, inner: Any, health: DatabaseHealth, timeout: float) -> None:
        self._inner = inner
        self._health = health
        self._timeout = timeout

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class GuardedBackend(_Wrapper):
    """A ``databases`` backend whose connections are guarded."""

    async def connect(self) -> None:
        await self._inner.connect()

    async def disconnect(self) -> None:
        """Close the pool. Connections still in use get ``timeout`` seconds (every call ends within
        it) to come back; then they are closed under their holders, so shutdown never waits forever."""
        try:
            async with asyncio.timeout(self._timeout):
                await self._inner.disconnect()
            return
        except TimeoutError:
            pass
        pool = getattr(self._inner, "_pool", None)
        log.warning("database connections still in use after %g s at shutdown: closing them", self._timeout)
        if pool is not None and hasattr(pool, "terminate"):
            pool.terminate()
            try:
                # Only a connection being opened right now is left to wait for (its connect timeout).
                async with asyncio.timeout(self._timeout):
                    await pool.wait_closed()
            except TimeoutError:
                log.warning("a database connection being opened at shutdown was abandoned")
            self._inner._pool = None

    def connection(self) -> GuardedConnection:
        return GuardedConnection(self._inner.connection(), self._health, self._timeout)


class GuardedConnection(_Wrapper):
    def _discard(self) -> None:
        """Close the driver's connection: a half-read answer must not reach the next query, nor a
        call still running in SQLite's connection thread (the backend closes that one at release)."""
        discard = getattr(self._inner, "discard", None)
        if discard is not None:
            discard()
            return
        raw = getattr(self._inner, "_connection", None)
        close = getattr(raw, "close", None)
        if raw is not None and close is not None and not asyncio.iscoroutinefunction(close):
            try:
                close()
            except Exception:
                log.debug("closing a broken database connection failed", exc_info=True)

    def refuse_while_down(self) -> None:
        """Fail at once while the database is known to be unavailable (see DatabaseHealth.refuses)."""
        if self._health.refuses():
            raise DatabaseUnavailable(f"the database is unavailable ({self._health.reason})")

    async def guard(self, call: Awaitable[T], *, releasing: bool = False) -> T:
        try:
            async with asyncio.timeout(self._timeout):
                return await call
        except asyncio.CancelledError:
            # The caller went away mid-call (its request was cancelled): the call may go on. Not
            # while releasing: the pool may hold the connection again already, and must not get
            # it back closed.
            if not releasing:
                self._discard()
            raise
        except TimeoutError:
            self._discard()
            unavailable = DatabaseUnavailable(f"the database did not answer within {self._timeout:g} s")
            self._health.failed(unavailable)
            raise unavailable from None
        except DatabaseUnavailable:
            raise
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            self._discard()
            self._health.failed(exc)
            raise DatabaseUnavailable(f"the database cannot be reached ({type(exc).__name__})") from exc

    async def acquire(self) -> None:
        self.refuse_while_down()
        await self.guard(self._inner.acquire())

    async def release(self) -> None:
        """Give the connection back. A slow release is left to finish, never discarded: aiomysql takes
        the connection back at once and only then waits for its pool's lock to wake a waiting
        acquirer, so closing it here would leave a closed connection among the pool's free ones,
        where every later acquire fails. (An acquirer holds that lock while it connects; on a
        starved machine the loop can stall past both deadlines.)"""
        giving_back = asyncio.ensure_future(self._inner.release())
        done, _pending = await asyncio.wait({giving_back}, timeout=self._timeout)
        if not done:
            log.warning(
                "giving a database connection back took over %g s; it goes on in the background",
                self._timeout,
            )
            return
        await self.guard(giving_back, releasing=True)  # its outcome, told apart like every call's

    async def fetch_all(self, query: Any) -> Any:
        self.refuse_while_down()
        return await self.guard(self._inner.fetch_all(query))

    async def fetch_one(self, query: Any) -> Any:
        self.refuse_while_down()
        return await self.guard(self._inner.fetch_one(query))

    async def fetch_val(self, query: Any, column: Any = 0) -> Any:
        self.refuse_while_down()
        return await self.guard(self._inner.fetch_val(query, column))

    async def execute(self, query: Any) -> Any:
        self.refuse_while_down()
        return await self.guard(self._inner.execute(query))

    async def execute_many(self, queries: list[Any]) -> None:
        self.refuse_while_down()
        await self.guard(self._inner.execute_many(queries))

    async def iterate(self, query: Any) -> AsyncGenerator[Any, None]:
        self.refuse_while_down()
        rows = self._inner.iterate(query)
        while True:
            try:
                row = await self.guard(rows.__anext__())
            except StopAsyncIteration:
                return
            yield row

    def transaction(self) -> GuardedTransaction:
        return GuardedTransaction(self._inner.transaction(), self)


class GuardedTransaction:
    def __init__(self, inner: Any, connection: GuardedConnection) -> None:
        self._inner = inner
        self._connection = connection

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def start(self, is_root: bool, extra_options: dict[Any, Any]) -> None:
        # Not refused here (``databases`` would keep the connection it acquired for it): the
        # acquisition before it, or the first statement in it, is.
        await self._connection.guard(self._inner.start(is_root, extra_options))

    async def commit(self) -> None:
        # Never refused: a transaction whose statements went through is committed if the database
        # lets it (one whose statements were refused ends in a rollback instead). A failed commit
        # still gives the connection back (app/db/ending.py), where the pool resets or drops it.
        await self._connection.guard(self._inner.commit())

    async def rollback(self) -> None:
        try:
            await self._connection.guard(self._inner.rollback())
        except DatabaseUnavailable:
            # The connection went with the database (it is discarded, or reset when the pool gets it
            # back): nothing is left to undo, and the error that made the transaction roll back is
            # the one its caller must see.
            log.debug("rolling back on an unreachable database: the connection is dropped instead")
