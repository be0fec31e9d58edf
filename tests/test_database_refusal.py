"""While the database is known to be unavailable, every call is refused at once instead of
waiting for its time limit (a request makes several calls: their waits would add up to a hung
request); only the health probe reaches the database, and once it answers calls go through again.

The outage: another process holds the SQLite write lock, so reads alone would still work; they
are refused too, until the probe has seen the database take a write again.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from app import db as database
from app.db.health import DatabaseUnavailable
from tests.vms.test_database_outage import sqlite_write_lock
from tests.waiting import eventually

TIMEOUT = 1.0


async def test_calls_are_refused_at_once_while_the_database_is_down_until_the_probe_sees_it_back(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'vdi.sqlite3'}"
    db = database.connect_database(url, timeout=TIMEOUT)
    db.health.probe_interval = 0.2
    await db.connect()
    try:
        await db.execute(sa.text("CREATE TABLE notes (body TEXT)"))
        async with db.health.watching(db.probe):
            with sqlite_write_lock(url):
                with pytest.raises(DatabaseUnavailable) as waited:
                    await db.execute(sa.text("INSERT INTO notes VALUES ('lost')"))
                # This one tried, and found the database out of reach.
                assert not str(waited.value).startswith("the database is unavailable"), waited.value
                assert not db.health.available
                # Known down: a read that the lock would let through is refused without a try.
                with pytest.raises(DatabaseUnavailable) as refused:
                    await db.fetch_val(sa.text("SELECT count(*) FROM notes"))
                assert str(refused.value).startswith("the database is unavailable ("), refused.value
                with pytest.raises(DatabaseUnavailable, match=r"^the database is unavailable"):
                    async with db.transaction():
                        await db.execute(sa.text("INSERT INTO notes VALUES ('lost too')"))
            # The lock is gone: the probe notices, and calls go through again.
            await eventually(lambda: db.health.available, "the probe seeing the database again")
            await db.execute(sa.text("INSERT INTO notes VALUES ('kept')"))
            assert await db.fetch_val(sa.text("SELECT group_concat(body) FROM notes")) == "kept"
    finally:
        await db.disconnect()
