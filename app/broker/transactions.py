"""Write transactions that serialize where the backend needs it.

``databases`` gives every asyncio task its own connection. On MariaDB a
transaction plus ``SELECT ... FOR UPDATE [SKIP LOCKED]`` row locks is enough.
SQLite has one writer at a time, and a deferred ``BEGIN`` that reads first and
writes later can fail with SQLITE_BUSY instead of waiting; so writers take an
in-process lock and start with ``BEGIN IMMEDIATE`` (the write lock up front,
which also serializes against other processes through the busy timeout).

On a Galera cluster row locks do not reach the other nodes: two replicas writing the
same rows through two nodes both proceed, and the one certified second fails with a
deadlock error. :meth:`WriteTransactions.run` runs a transaction again when that
happens (:mod:`app.db.retry`), so correctness rests on rows *written* in the
transaction, never on locks alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from databases import Database
from databases.core import Connection

from app.db.retry import retrying, transaction

T = TypeVar("T")


class WriteTransactions:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.sqlite = db.url.dialect == "sqlite"
        self._lock = asyncio.Lock()
        # Transactions run again after a certification failure or a lost node (cluster health).
        self.retries = 0

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[Connection]:
        """A connection inside a transaction; commits on success, rolls back on error."""
        if not self.sqlite:
            async with transaction(self.db) as conn:
                yield conn
            return
        async with self._lock, transaction(self.db, begin="BEGIN IMMEDIATE") as conn:
            yield conn

    async def run(self, work: Callable[[Connection], Awaitable[T]], *, what: str = "transaction") -> T:
        """``work(conn)`` in one transaction, run again (bounded) when the cluster refuses it."""

        async def once() -> T:
            async with self.begin() as conn:
                return await work(conn)

        return await retrying(once, what=what, on_retry=self._count)

    def _count(self, _exc: BaseException) -> None:
        self.retries += 1
