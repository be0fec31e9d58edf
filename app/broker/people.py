"""Administering accounts: local portal users, admins, directory users and directory groups."""

from __future__ import annotations

import sqlalchemy as sa
from databases import Database

from app.auth.accounts import AccountError, create_local_user, set_password
from app.auth.passwords import generate_password
from app.auth.sessions import revoke_user_credentials
from app.clock import utcnow
from app.db.records import DirectoryGroupRecord, UserRecord, fetch_record, fetch_records
from app.db.retry import transaction
from app.db.schema import (
    api_tokens,
    console_tickets,
    directory_groups,
    leases,
    pool_groups,
    pool_users,
    sessions,
    users,
    vms,
)
from app.i18n import gettext as _


async def list_users(db: Database) -> list[UserRecord]:
    return await fetch_records(
        db, UserRecord, users.select().order_by(users.c.role, users.c.username, users.c.source)
    )


async def get_user(db: Database, user_id: int) -> UserRecord | None:
    return await fetch_record(db, UserRecord, users.select().where(users.c.id == user_id))


async def _enabled_admins(db: Database) -> int:
    query = (
        sa.select(sa.func.count())
        .select_from(users)
        .where(users.c.role == "admin", users.c.disabled.is_(sa.false()))
    )
    return int(await db.fetch_val(query) or 0)


async def create_account(
    db: Database, username: str, role: str, display_name: str = "", email: str = ""
) -> tuple[int, str]:
    """A local account with a generated password, shown once (admins change it at first log-in)."""
    if role not in ("admin", "client"):
        raise AccountError(_("choose the role: portal user or administrator"))
    if len(username.strip()) > 128:
        raise AccountError(_("the user name has at most 128 characters"))
    password = generate_password()
    user_id = await create_local_user(
        db,
        username,
        password,
        role=role,
        must_change_password=role == "admin",
        display_name=display_name.strip()[:255],
        email=email.strip()[:255],
    )
    return user_id, password


async def set_disabled(db: Database, user_id: int, disabled: bool) -> UserRecord:
    user = await get_user(db, user_id)
    if user is None:
        raise AccountError(_("no such user"))
    if disabled and user.role == "admin" and not user.disabled and await _enabled_admins(db) <= 1:
        raise AccountError(_("this is the last enabled administrator: enable or create another one first"))
    await db.execute(users.update().where(users.c.id == user_id).values(disabled=disabled))
    if disabled:
        await revoke_user_credentials(db, user_id)
    return user


async def reset_password(db: Database, user_id: int) -> tuple[UserRecord, str]:
    user = await get_user(db, user_id)
    if user is None:
        raise AccountError(_("no such user"))
    password = generate_password()
    # Admins must choose their own at next log-in; portal users have no password page of their own.
    await set_password(db, user_id, password, must_change=user.role == "admin")
    await revoke_user_credentials(db, user_id)
    return user, password


async def delete_user(db: Database, user_id: int) -> UserRecord:
    user = await get_user(db, user_id)
    if user is None:
        raise AccountError(_("no such user"))
    if user.role == "admin" and await _enabled_admins(db) <= 1 and not user.disabled:
        raise AccountError(_("this is the last enabled administrator: it cannot be deleted"))
    active = await db.fetch_val(
        sa.select(sa.func.count())
        .select_from(leases)
        .where(leases.c.user_id == user_id, leases.c.ended_at.is_(None))
    )
    if active:
        raise AccountError(
            _("{username} holds {active} desktop(s): end those sessions first").format(
                username=user.username, active=active
            )
        )
    async with transaction(db):
        await db.execute(vms.update().where(vms.c.last_user_id == user_id).values(last_user_id=None))
        await db.execute(vms.update().where(vms.c.assigned_user_id == user_id).values(assigned_user_id=None))
        for table in (leases, console_tickets, api_tokens, sessions, pool_users):
            await db.execute(table.delete().where(table.c.user_id == user_id))
        await db.execute(users.delete().where(users.c.id == user_id))
    return user


# Directory groups


async def list_groups(db: Database) -> list[DirectoryGroupRecord]:
    return await fetch_records(
        db, DirectoryGroupRecord, directory_groups.select().order_by(directory_groups.c.name)
    )


async def add_group(db: Database, name: str, description: str = "") -> int:
    name = name.strip()
    if not name or len(name) > 255:
        raise AccountError(
            _("enter the group's name (e.g. vdi-users) or its full DN, at most 255 characters")
        )
    taken = await fetch_record(
        db,
        DirectoryGroupRecord,
        directory_groups.select().where(sa.func.lower(directory_groups.c.name) == name.lower()),
    )
    if taken is not None:
        raise AccountError(_("the group {name!r} is already registered").format(name=name))
    group_id: int = await db.execute(
        directory_groups.insert().values(
            name=name, description=description.strip()[:255], created_at=utcnow()
        )
    )
    return group_id


async def delete_group(db: Database, group_id: int) -> DirectoryGroupRecord:
    group = await fetch_record(
        db, DirectoryGroupRecord, directory_groups.select().where(directory_groups.c.id == group_id)
    )
    if group is None:
        raise AccountError(_("no such group"))
    async with transaction(db):
        await db.execute(pool_groups.delete().where(pool_groups.c.group_id == group_id))
        await db.execute(directory_groups.delete().where(directory_groups.c.id == group_id))
    return group
