"""The embedded SQLite database under concurrency: WAL, a busy timeout, one writer at a time.

``databases`` opens a new SQLite connection (and thread) for every query, in the
default rollback-journal mode, where a reader blocks a writer and a writer
fails with "database is locked" once the busy timeout runs out. A morning's
log-in storm then answers errors. This backend instead:

- keeps a bounded pool of open connections (no thread started per query);
- puts the database in WAL mode, where readers and the writer do not block each
  other, with ``synchronous=NORMAL`` (durable at checkpoints, safe in WAL);
- serialises every write in the process: a statement that writes, and every
  transaction (started with ``BEGIN IMMEDIATE``, holding the write lock from the
  start), takes one asyncio lock, so writers queue in the process instead of
  failing; the busy timeout still covers other processes (the CLI, migrations).

Reads outside a transaction take no lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite
from databases.backends import sqlite as base
from databases.core import DatabaseURL
from sqlalchemy.sql import ClauseElement

log = logging.getLogger("kvmvdi.db")

POOL_SIZE = 16


class ConnectionPool:
    """Open connections, reused; at most ``size`` in use at once (others wait)."""

    def __init__(self, url: DatabaseURL, *, size: int, busy_timeout: float) -> None:
        self._database = url.database
        self._busy_timeout = busy_timeout
        self._idle: list[aiosqlite.Connection] = []
        self._slots = asyncio.Semaphore(size)
        # Discarded connections whose thread has yet to close them (see ``release``).
        self._closing: set[asyncio.Future[Any]] = set()

    async def _open(self) -> aiosqlite.Connection:
        connection = aiosqlite.connect(self._database, isolation_level=None, timeout=self._busy_timeout)
        await connection.__aenter__()
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL"):
            async with connection.execute(f"PRAGMA {pragma}") as cursor:
                await cursor.fetchall()
        return connection

    async def acquire(self) -> aiosqlite.Connection:
        await self._slots.acquire()
        try:
            return self._idle.pop() if self._idle else await self._open()
        except BaseException:
            self._slots.release()
            raise

    async def release(self, connection: aiosqlite.Connection, *, reusable: bool = True) -> None:
        """Back to the pool, or closed if not ``reusable``: its thread may still be running a call
        that its caller gave up on (a BEGIN that gets the write lock after its caller timed out would
        keep the lock, idle in the pool, until the connection's next use). The close is queued behind
        that call, without waiting for it, and rolls back whatever it left open."""
        if not reusable:
            closed = connection.stop()
            if closed is not None:
                self._closing.add(closed)
                closed.add_done_callback(self._closing.discard)
            self._slots.release()
            return
        try:
            if connection.in_transaction:
                # Left inside a transaction (a cancelled request): never hand that on.
                await connection.rollback()
            self._idle.append(connection)
        except Exception:
            log.warning("dropping a database connection that could not be reset", exc_info=True)
            await connection.close()
        finally:
            self._slots.release()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.close()
        await asyncio.gather(*self._closing, return_exceptions=True)


class SQLiteBackend(base.SQLiteBackend):
    """``databases``' SQLite backend with the pool and the write lock above."""

    def __init__(self, database_url: DatabaseURL | str, **options: Any) -> None:
        busy_timeout = float(options.pop("busy_timeout", 10.0))
        pool_size = int(options.pop("pool_size", POOL_SIZE))
        super().__init__(database_url, **options)
        self.pool = ConnectionPool(self._database_url, size=pool_size, busy_timeout=busy_timeout)
        self.writer = asyncio.Lock()

    async def disconnect(self) -> None:
        await self.pool.close()

    def connection(self) -> SerializedConnection:
        return SerializedConnection(self)


class SerializedConnection(base.SQLiteConnection):
    _connection: aiosqlite.Connection | None

    def __init__(self, backend: SQLiteBackend) -> None:
        super().__init__(backend._pool, backend._dialect)
        self._backend = backend
        self._writing = False
        self._discarded = False

    async def acquire(self) -> None:
        assert self._connection is None, "Connection is already acquired"
        self._connection = await self._backend.pool.acquire()

    async def release(self) -> None:
        assert self._connection is not None, "Connection is not acquired"
        connection, self._connection = self._connection, None
        reusable, self._discarded = not self._discarded, False
        try:
            await self._backend.pool.release(connection, reusable=reusable)
        finally:
            self.stop_writing(force=True)

    def discard(self) -> None:
        """A call on this connection was given up (timed out or cancelled) while its thread may still
        run it: the connection is closed at its release instead of going back to the pool."""
        self._discarded = self._connection is not None

    async def start_writing(self) -> None:
        if not self._writing:
            await self._backend.writer.acquire()
            self._writing = True

    def stop_writing(self, *, force: bool = False) -> None:
        """Give the write lock back, unless a transaction on this connection is still open."""
        in_transaction = self._connection is not None and self._connection.in_transaction
        if self._writing and (force or not in_transaction):
            self._writing = False
            self._backend.writer.release()

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[None]:
        await self.start_writing()
        try:
            yield
        finally:
            # A raw BEGIN keeps the lock until its COMMIT or ROLLBACK.
            self.stop_writing()

    async def execute(self, query: ClauseElement) -> Any:
        async with self.writing():
            return await super().execute(query)

    def transaction(self) -> SerializedTransaction:
        return SerializedTransaction(self)


class SerializedTransaction(base.SQLiteTransaction):
    """A transaction holds the write lock from ``BEGIN IMMEDIATE`` to its end."""

    _connection: SerializedConnection

    async def start(self, is_root: bool, extra_options: dict[Any, Any]) -> None:
        if not is_root:
            await super().start(is_root, extra_options)
            return
        self._is_root = True
        connection = self._connection
        await connection.start_writing()
        try:
            assert connection._connection is not None, "Connection is not acquired"
            async with connection._connection.execute("BEGIN IMMEDIATE") as cursor:
                await cursor.close()
        except BaseException:
            connection.stop_writing(force=True)
            raise

    async def commit(self) -> None:
        try:
            await super().commit()
        finally:
            if self._is_root:
                self._connection.stop_writing()

    async def rollback(self) -> None:
        try:
            await super().rollback()
        finally:
            if self._is_root:
                self._connection.stop_writing(force=True)
