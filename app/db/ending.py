"""``databases``' connection and transaction, giving their pool connection back however they end.

``databases`` releases a transaction's connection only after a COMMIT or ROLLBACK that returned,
and keeps the one it acquired for a transaction whose BEGIN failed; a connection whose release
failed stays attached to its task. On a server that went away all of these fail, so each outage
kept a few connections from the pool for good: the pool ran dry after a few outages (every
request then waited for a connection), and closing it never ended (aiomysql waits for every
connection it lent). Here the connection is given back in every case, and the error still
reaches the caller.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from databases.core import Connection, Transaction


class EndingConnection(Connection):
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        async with self._connection_lock:
            self._connection_counter -= 1
            if self._connection_counter == 0:
                try:
                    await self._connection.release()
                finally:
                    # A failed release must not leave the task holding a half-released connection.
                    self._database._connection = None

    def transaction(self, *, force_rollback: bool = False, **kwargs: Any) -> EndingTransaction:
        return EndingTransaction(lambda: self, force_rollback, **kwargs)


class EndingTransaction(Transaction):
    async def start(self) -> EndingTransaction:
        connection = self._connection
        self._transaction = connection._connection.transaction()
        async with connection._transaction_lock:
            is_root = not connection._transaction_stack
            await connection.__aenter__()
            try:
                assert self._transaction is not None
                await self._transaction.start(is_root=is_root, extra_options=self._extra_options)
            except BaseException:
                self._transaction = None
                await connection.__aexit__()
                raise
            connection._transaction_stack.append(self)
        return self

    async def commit(self) -> None:
        await self._end(commit=True)

    async def rollback(self) -> None:
        await self._end(commit=False)

    async def _end(self, *, commit: bool) -> None:
        connection = self._connection
        async with connection._transaction_lock:
            assert connection._transaction_stack[-1] is self
            connection._transaction_stack.pop()
            transaction = self._transaction
            assert transaction is not None
            try:
                await (transaction.commit() if commit else transaction.rollback())
            finally:
                # Back to the pool even after a failed end: the backend's release resets or drops
                # a connection left inside a transaction (aiomysql closes it, SQLite rolls back).
                self._transaction = None
                await connection.__aexit__()
