"""Small admin-editable values kept in the ``preferences`` table (message of the day ...)."""

from __future__ import annotations

from databases import Database

from app.db.schema import preferences

MOTD = "portal.motd"
MOTD_LIMIT = 2000


async def get_preference(db: Database, key: str, default: str = "") -> str:
    row = await db.fetch_one(preferences.select().where(preferences.c.key == key))
    return str(row.value) if row is not None else default


async def set_preference(db: Database, key: str, value: str) -> None:
    async with db.transaction():
        if await db.fetch_one(preferences.select().where(preferences.c.key == key)) is None:
            await db.execute(preferences.insert().values(key=key, value=value))
        else:
            await db.execute(preferences.update().where(preferences.c.key == key).values(value=value))
