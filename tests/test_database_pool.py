"""A pool connection survives every way a transaction can end on a database that went away: the
pool keeps serving outage after outage, and closing it ends, even while a connection is in use.

The outages are real: on MariaDB the server kills the session between a transaction's last
statement and its COMMIT; on SQLite another process holds the write lock at its BEGIN. Each one
happens in a task of its own, as in a request.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from app import db as database
from app.db import AppDatabase, async_url
from app.db.health import DatabaseUnavailable
from tests.services.mariadb import MariaDB
from tests.vms.test_database_outage import sqlite_write_lock
from tests.waiting import eventually

TIMEOUT = 1.0
POOL_SIZE = 2
OUTAGES = POOL_SIZE + 1
GENEROUS = 30.0


async def _transaction_meets_an_outage(
    db: AppDatabase, backend: str, url: str, request: pytest.FixtureRequest
) -> None:
    if backend == "mariadb":
        server: MariaDB = request.getfixturevalue("mariadb")
        with pytest.raises(DatabaseUnavailable):
            async with db.transaction():
                await db.execute(sa.text("INSERT INTO notes VALUES ('lost')"))
                session = int(await db.fetch_val(sa.text("SELECT CONNECTION_ID()")))
                await asyncio.to_thread(server.sql, f"KILL {session}")
        return
    with sqlite_write_lock(url), pytest.raises(DatabaseUnavailable):
        async with db.transaction():
            await db.execute(sa.text("INSERT INTO notes VALUES ('lost')"))


async def test_outage_after_outage_the_pool_keeps_serving_and_closes(
    database_url: str, database_backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    db = database.connect_database(database_url, timeout=TIMEOUT, pool_size=POOL_SIZE)
    db.health.probe_interval = 0.05
    await db.connect()
    try:
        await db.execute(sa.text("CREATE TABLE notes (body VARCHAR(20))"))
        async with db.health.watching(db.probe):
            for _ in range(OUTAGES):
                outage = _transaction_meets_an_outage(db, database_backend, database_url, request)
                await asyncio.create_task(outage)
                await eventually(
                    lambda: db.health.available, "the database available again", timeout=GENEROUS
                )

            # More outages than the pool has connections: none was kept from it.
            async def kept() -> None:
                async with db.transaction():
                    await db.execute(sa.text("INSERT INTO notes VALUES ('kept')"))

            await asyncio.gather(*(asyncio.create_task(kept()) for _ in range(POOL_SIZE + 1)))
            rows = await db.fetch_all(sa.text("SELECT body FROM notes"))
            assert sorted(row[0] for row in rows) == ["kept"] * (POOL_SIZE + 1)
    finally:
        async with asyncio.timeout(GENEROUS):
            await db.disconnect()


async def test_closing_the_pool_ends_while_a_connection_is_still_in_use(database_url: str) -> None:
    db = database.connect_database(database_url, timeout=TIMEOUT)
    await db.connect()
    holding = asyncio.Event()
    forever = asyncio.Event()

    async def stuck_request() -> None:
        async with db.connection() as connection:
            await connection.fetch_val(sa.text("SELECT 1"))
            holding.set()
            await forever.wait()

    stuck = asyncio.create_task(stuck_request())
    try:
        async with asyncio.timeout(GENEROUS):
            await holding.wait()
            await db.disconnect()
        assert not db.is_connected
    finally:
        stuck.cancel()
        await asyncio.gather(stuck, return_exceptions=True)


def _write_from_another_process(path: Path, *, timeout: float) -> None:
    """What ``kvm-vdi check`` or a migration does beside a running dashboard: take the write lock."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=timeout)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT INTO notes VALUES ('other')")
        connection.execute("COMMIT")
    finally:
        connection.close()


async def test_a_call_that_outlives_its_time_limit_leaves_no_write_lock_behind(tmp_path: Path) -> None:
    """SQLite runs each call in its connection's thread, which goes on after its caller gave up:
    a BEGIN that gets the write lock only after its caller timed out must not keep it."""
    path = tmp_path / "late.sqlite3"
    url = f"sqlite:///{path}"
    # SQLite waits for the lock longer than the caller does, so the BEGIN outlives its time limit.
    db = AppDatabase(async_url(url), call_timeout=TIMEOUT, busy_timeout=GENEROUS)
    db.health.probe_interval = 0.05
    await db.connect()
    try:
        await db.execute(sa.text("CREATE TABLE notes (body VARCHAR(20))"))

        async def late_write() -> None:
            async with db.transaction():
                await db.execute(sa.text("INSERT INTO notes VALUES ('lost')"))

        # A request reading meanwhile, on a connection of its own, gives it back last: the next
        # call gets that one, and the connection whose BEGIN is still running stays idle beneath.
        async with db.connection() as reading:
            await reading.fetch_val(sa.text("SELECT 1"))
            with sqlite_write_lock(url), pytest.raises(DatabaseUnavailable):
                await asyncio.create_task(late_write())
        # The lock's holder is gone: the BEGIN left running gets the lock, and must give it up.
        async with db.health.watching(db.probe):
            await eventually(lambda: db.health.available, "the database available again", timeout=GENEROUS)
            async with db.transaction():
                await db.execute(sa.text("INSERT INTO notes VALUES ('kept')"))
        await asyncio.to_thread(_write_from_another_process, path, timeout=GENEROUS / 3)
        rows = await asyncio.to_thread(_rows, path)
        assert rows == ["kept", "other"]
    finally:
        async with asyncio.timeout(GENEROUS):
            await db.disconnect()


def _rows(path: Path) -> list[str]:
    connection = sqlite3.connect(path)
    try:
        return sorted(row[0] for row in connection.execute("SELECT body FROM notes"))
    finally:
        connection.close()


async def test_a_release_outlasting_the_timeout_leaves_no_closed_connection_in_the_pool(
    mariadb: MariaDB,
) -> None:
    """On a starved machine the loop stalls past a release's deadline while an acquirer holds the
    pool's lock (it connects to a server that does not answer): the connection given back must stay
    usable, or every later acquire fails and the dashboard never recovers."""
    mariadb.reset()
    timeout = 2.0
    db = database.connect_database(mariadb.url, timeout=timeout, pool_size=POOL_SIZE)
    db.health.probe_interval = 0.05
    await db.connect()
    pool = db._backend._inner._pool  # aiomysql's pool: where the lock and the free connections are
    holding, give_back = asyncio.Event(), asyncio.Event()

    async def request() -> None:
        async with db.connection() as connection:
            await connection.fetch_val(sa.text("SELECT 1"))
            holding.set()
            await give_back.wait()

    try:
        held = asyncio.create_task(request())
        await eventually(holding.is_set, "a request holding the pool's only connection")
        with mariadb.frozen():
            # Another request needs a connection: the pool opens one, holding its lock meanwhile.
            waiting = asyncio.create_task(db.fetch_val(sa.text("SELECT 1")))
            await eventually(pool._cond.locked, "an acquirer connecting under the pool's lock")
            give_back.set()
            await eventually(lambda: len(pool._free) == 1, "the connection back among the free ones")
            # The loop stalls past both deadlines (a machine at load 40 did this in the soak).
            time.sleep(timeout * 1.5)  # the stall is the fault injected
            outcomes = await asyncio.gather(held, waiting, return_exceptions=True)
        assert outcomes[0] is None, "the release itself succeeded"
        assert isinstance(outcomes[1], DatabaseUnavailable), outcomes[1]
        async with db.health.watching(db.probe):
            await eventually(lambda: db.health.available, "the database answering the probe again")
            for _ in range(POOL_SIZE + 1):
                assert await db.fetch_val(sa.text("SELECT 1")) == 1
    finally:
        async with asyncio.timeout(GENEROUS):
            await db.disconnect()
