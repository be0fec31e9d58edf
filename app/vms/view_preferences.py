"""How one admin likes the VM table: density, rows per page, collapsed initial machines.

Kept in ``user_preferences`` (not the browser), so that an admin finds the table as
they left it on any browser, and two tabs never disagree for long.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from databases import Database

from app.db.records import Record, fetch_records
from app.db.schema import user_preferences
from app.vms.listing import DEFAULT_PAGE_SIZE, DENSITIES, PAGE_SIZES

COLLAPSED = "vms.collapsed"
DENSITY = "vms.density"
PAGE_SIZE = "vms.per_page"
# Beyond this many collapsed initials those made first are forgotten (the row stays bounded).
MAX_COLLAPSED = 2000


@dataclass(frozen=True)
class Preference(Record):
    """One of a user's stored preferences (``user_preferences``: key and value)."""

    key: str
    value: str


@dataclass(frozen=True)
class VmView:
    collapsed: frozenset[int] = frozenset()
    density: str = "compact"
    per_page: int = DEFAULT_PAGE_SIZE


async def load_view(db: Database, user_id: int) -> VmView:
    rows = await fetch_records(
        db,
        Preference,
        sa.select(user_preferences.c.key, user_preferences.c.value).where(
            user_preferences.c.user_id == user_id,
            user_preferences.c.key.in_((COLLAPSED, DENSITY, PAGE_SIZE)),
        ),
    )
    stored = {row.key: row.value for row in rows}
    try:
        collapsed = frozenset(int(vm_id) for vm_id in json.loads(stored.get(COLLAPSED, "[]")))
    except (ValueError, TypeError):
        collapsed = frozenset()
    density = stored.get(DENSITY, "")
    per_page = stored.get(PAGE_SIZE, "")
    return VmView(
        collapsed=collapsed,
        density=density if density in DENSITIES else VmView.density,
        per_page=int(per_page) if per_page.isdigit() and int(per_page) in PAGE_SIZES else DEFAULT_PAGE_SIZE,
    )


async def _store(db: Database, user_id: int, key: str, value: str) -> None:
    table = user_preferences
    where = sa.and_(table.c.user_id == user_id, table.c.key == key)
    async with db.transaction():
        if await db.fetch_one(sa.select(table.c.key).where(where)) is None:
            await db.execute(table.insert().values(user_id=user_id, key=key, value=value))
        else:
            await db.execute(table.update().where(where).values(value=value))


async def change_view(
    db: Database,
    user_id: int,
    *,
    collapse: Iterable[int] = (),
    expand: Iterable[int] = (),
    density: str | None = None,
    per_page: int | None = None,
) -> VmView:
    """Apply the changes one request names (collapse/expand are deltas: tabs do not undo each other)."""
    view = await load_view(db, user_id)
    folded = (view.collapsed - set(expand)) | set(collapse)
    if folded != view.collapsed:
        await _store(db, user_id, COLLAPSED, json.dumps(sorted(folded)[-MAX_COLLAPSED:]))
    if density is not None:
        await _store(db, user_id, DENSITY, density)
    if per_page is not None:
        await _store(db, user_id, PAGE_SIZE, str(per_page))
    return await load_view(db, user_id)
