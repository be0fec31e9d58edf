"""Small admin-editable values kept in the ``preferences`` table (message of the day ...)."""

from __future__ import annotations

from dataclasses import dataclass

from databases import Database

from app.db.records import Record, fetch_record
from app.db.retry import transaction
from app.db.schema import preferences

MOTD = "portal.motd"
MOTD_LIMIT = 2000
# "1": every pool takes its users straight to their desktop after log-in (see app.broker.catalog).
STRAIGHT_TO_DESKTOP = "portal.straight_to_desktop"


@dataclass(frozen=True)
class Preference(Record):
    __table__ = preferences

    key: str
    value: str


async def get_preference(db: Database, key: str, default: str = "") -> str:
    found = await fetch_record(db, Preference, preferences.select().where(preferences.c.key == key))
    return found.value if found is not None else default


async def set_preference(db: Database, key: str, value: str) -> None:
    async with transaction(db):
        if await db.fetch_one(preferences.select().where(preferences.c.key == key)) is None:
            await db.execute(preferences.insert().values(key=key, value=value))
        else:
            await db.execute(preferences.update().where(preferences.c.key == key).values(value=value))


async def get_flag(db: Database, key: str) -> bool:
    return await get_preference(db, key) == "1"


async def set_flag(db: Database, key: str, value: bool) -> None:
    await set_preference(db, key, "1" if value else "")
