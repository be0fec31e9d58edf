"""Directory users in the dashboard's ``users`` table (``source = 'directory'``).

A row is created at the first login and its display name and mail are
refreshed at every login; no password is ever stored for them.
"""

from __future__ import annotations

import contextlib

from databases import Database

from app.clock import utcnow
from app.db.records import UserRecord, fetch_record
from app.db.schema import users
from app.directory.login import DirectoryIdentity


async def find_directory_user(db: Database, username: str) -> UserRecord | None:
    return await fetch_record(
        db, UserRecord, users.select().where(users.c.username == username, users.c.source == "directory")
    )


async def upsert_directory_user(db: Database, identity: DirectoryIdentity) -> UserRecord:
    """The users row of this identity, created or refreshed; the caller checks ``disabled``."""
    now = utcnow()
    row = await find_directory_user(db, identity.username)
    if row is None:
        # A concurrent first login may have created it: the row read below is then the same account.
        with contextlib.suppress(Exception):
            await db.execute(
                users.insert().values(
                    username=identity.username,
                    source="directory",
                    role="client",
                    password_hash=None,
                    display_name=identity.display_name[:255],
                    email=identity.email[:255],
                    created_at=now,
                    last_login_at=now,
                )
            )
    else:
        await db.execute(
            users.update()
            .where(users.c.id == row.id)
            .values(display_name=identity.display_name[:255], email=identity.email[:255], last_login_at=now)
        )
    row = await find_directory_user(db, identity.username)
    assert row is not None
    return row
