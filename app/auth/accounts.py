"""Local accounts: look-up, credential checks, first admin, password changes."""

from __future__ import annotations

import asyncio
import logging

from databases import Database

from app.auth.passwords import check_strength, generate_password, hash_password
from app.clock import utcnow
from app.db.records import UserRecord, fetch_record
from app.db.schema import users
from app.i18n import gettext as _

log = logging.getLogger("kvmvdi.auth")


class AccountError(ValueError):
    pass


async def find_local_user(db: Database, username: str) -> UserRecord | None:
    return await fetch_record(
        db, UserRecord, users.select().where(users.c.username == username, users.c.source == "local")
    )


async def _hash(password: str) -> str:
    # Off the event loop. Log-ins verify on the bounded password workers (app.auth.hashing);
    # hashing here follows an administrator's action or a password change, never a stranger's.
    return await asyncio.to_thread(hash_password, password)


async def create_local_user(
    db: Database,
    username: str,
    password: str,
    *,
    role: str,
    must_change_password: bool = False,
    display_name: str = "",
    email: str = "",
) -> int:
    username = username.strip()
    if not username:
        raise AccountError(_("the user name must not be empty"))
    if await find_local_user(db, username) is not None:
        raise AccountError(_("a local user named {username!r} already exists").format(username=username))
    check_strength(password, username=username)
    user_id: int = await db.execute(
        users.insert().values(
            username=username,
            source="local",
            role=role,
            password_hash=await _hash(password),
            must_change_password=must_change_password,
            display_name=display_name,
            email=email,
            created_at=utcnow(),
        )
    )
    return user_id


async def set_password(db: Database, user_id: int, password: str, *, must_change: bool = False) -> None:
    row = await fetch_record(db, UserRecord, users.select().where(users.c.id == user_id))
    if row is None:
        raise AccountError(_("no such user"))
    if row.source != "local":
        raise AccountError(_("directory users change their password in the directory"))
    check_strength(password, username=row.username)
    await db.execute(
        users.update()
        .where(users.c.id == user_id)
        .values(password_hash=await _hash(password), must_change_password=must_change)
    )


async def ensure_first_admin(db: Database) -> tuple[str, str] | None:
    """Create the first admin when there is none; return (name, password) to print once.

    There is no fixed default password: a random one is generated and must be
    changed at first login.
    """
    existing = await db.fetch_one(users.select().where(users.c.role == "admin").limit(1))
    if existing is not None:
        return None
    password = generate_password()
    await create_local_user(db, "admin", password, role="admin", must_change_password=True)
    return "admin", password


async def save_language(db: Database, user_id: int, language: str) -> None:
    """The language the user chose, used again at their next log-in on any browser."""
    await db.execute(users.update().where(users.c.id == user_id).values(language=language))


async def saved_language(db: Database, user_id: int) -> str:
    value = await db.fetch_val(
        users.select().with_only_columns(users.c.language).where(users.c.id == user_id)
    )
    return str(value or "")
