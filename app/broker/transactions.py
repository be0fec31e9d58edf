"""Write transactions that serialize where the backend needs it.

``databases`` gives every asyncio task its own connection. On MariaDB a
transaction plus ``SELECT ... FOR UPDATE [SKIP LOCKED]`` row locks is enough.
SQLite has one writer at a time, and a deferred ``BEGIN`` that reads first and
writes later can fail with SQLITE_BUSY instead of waiting; so writers take an
in-process lock and start with ``BEGIN IMMEDIATE`` (the write lock up front,
which also serializes against other processes through the busy timeout).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from databases import Database
from databases.core import Connection


class WriteTransactions:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.sqlite = db.url.dialect == "sqlite"
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[Connection]:
        """A connection inside a transaction; commits on success, rolls back on error."""
        if not self.sqlite:
            async with self.db.connection() as conn, conn.transaction():
                yield conn
            return
        async with self._lock, self.db.connection() as conn:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")
