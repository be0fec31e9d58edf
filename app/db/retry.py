"""Retrying what a Galera cluster (or a moment without a database node) refuses.

On Galera, two nodes never block each other: a transaction that wrote the same rows as
one certified first is aborted with a deadlock error (1213), at COMMIT or at its next
statement. A node leaving the primary component answers 1047 until it is back, and a
connection to a node that died is lost (2006, 2013). The whole transaction is then run
again, a few times, after a short random pause; each attempt starts from a clean read,
so it sees what the winner committed.

:func:`transaction` is the transaction to retry: ``databases``' own leaks its pooled
connection when COMMIT itself fails (it never releases it), which on Galera is exactly
where certification failures surface; a pool full of leaked connections then hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from databases import Database
from databases.core import Connection

from app.db.health import DatabaseUnavailable

log = logging.getLogger("kvmvdi.db")

T = TypeVar("T")

# MariaDB error numbers worth another attempt of the whole transaction.
DEADLOCK = 1213  # also Galera's certification failure and brute-force abort
LOCK_WAIT_TIMEOUT = 1205
WSREP_NOT_READY = 1047  # the node is not in the primary component (yet)
COMMIT_FAILED = 1180
SERVER_GONE = 2006
CONNECTION_LOST = 2013
RETRYABLE = frozenset(
    {DEADLOCK, LOCK_WAIT_TIMEOUT, WSREP_NOT_READY, COMMIT_FAILED, SERVER_GONE, CONNECTION_LOST}
)

ATTEMPTS = 6
FIRST_PAUSE = 0.01
LONGEST_PAUSE = 0.5


def error_code(exc: BaseException) -> int | None:
    """The MariaDB error number of a driver exception (PyMySQL puts it first in ``args``)."""
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], int):
        return int(args[0])
    return None


def retryable(exc: BaseException) -> bool:
    """A failure another attempt of the whole transaction can overcome.

    A connection lost to a node that died reaches here as the guard's ``DatabaseUnavailable``
    (app/db/guarded.py) caused by the driver's error: that is worth another attempt (a fresh
    connection reaches another node); a time-out is not.
    """
    if isinstance(exc, DatabaseUnavailable) and exc.__cause__ is not None:
        exc = exc.__cause__
    module = type(exc).__module__
    return module.startswith("pymysql") and error_code(exc) in RETRYABLE


async def retrying(
    work: Callable[[], Awaitable[T]],
    *,
    what: str,
    attempts: int = ATTEMPTS,
    on_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """``await work()``, again after a pause when it fails retryably; the last failure is raised."""
    pause = FIRST_PAUSE
    for attempt in range(1, attempts + 1):
        try:
            return await work()
        except Exception as exc:
            if attempt == attempts or not retryable(exc):
                raise
            if on_retry is not None:
                on_retry(exc)
            log.info("%s: attempt %d failed (%s), trying again", what, attempt, exc)
            # Random pauses keep two losers from colliding again at once.
            await asyncio.sleep(random.uniform(pause / 2, pause))  # noqa: S311 - not a secret
            pause = min(pause * 3, LONGEST_PAUSE)
    raise AssertionError("unreachable")


@contextlib.asynccontextmanager
async def transaction(db: Database, *, begin: str | None = None) -> AsyncIterator[Connection]:
    """This task's connection inside one transaction: committed at the end, rolled back on error,
    and released whatever COMMIT does. Statements through ``db`` in this task use it too.

    ``begin`` replaces the opening statement (SQLite writers use ``BEGIN IMMEDIATE``).
    """
    opening = begin or ("BEGIN" if db.url.dialect == "sqlite" else "START TRANSACTION")
    async with db.connection() as conn:
        await conn.execute(opening)
        try:
            yield conn
            await conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.execute("ROLLBACK")
            raise
