"""Who may use the portal and the broker API: local portal accounts and directory users.

The realm rule. A local account and a directory account may share a user name;
they are two different accounts, and one log-in checks exactly one of them.

* ``realm = "local"`` checks the local password only; ``realm = "directory"``
  asks the directory only.
* Without a realm (thin clients, scripts, the portal's "automatic" choice): a name
  that belongs to a local portal account logs in to that account; any other name
  goes to the directory when one is configured. Local accounts are the ones an
  administrator created here on purpose, so a local user logs in without knowing
  about realms, and everyone else is a directory user.

The choice depends on the name alone, never on the password or on the outcome: a
directory password never opens a local account of the same name, a local password
never opens the directory account, and a refused log-in never falls back from one
to the other. A directory user whose name an administrator also gave a local
account logs in with ``realm = "directory"`` (the portal's *Account* choice, the
launcher's ``dashboard.realm``).
"""

from __future__ import annotations

from typing import Literal

import sqlalchemy as sa
from databases import Database

from app.db.schema import users
from app.directory import DirectoryLogin
from app.i18n import gettext as _

Realm = Literal["local", "directory"]
REALMS: tuple[Realm, ...] = ("local", "directory")


class RealmError(ValueError):
    pass


def requested_realm(requested: str | None, directory: DirectoryLogin) -> Realm | None:
    """The realm a log-in named (checked), or ``None`` when it named none."""
    if not requested:
        return None
    if requested not in REALMS:
        raise RealmError(_("must be 'local' or 'directory'"))
    if requested == "directory" and not directory.enabled:
        raise RealmError("directory log-in is not configured here")
    return "directory" if requested == "directory" else "local"


async def choose_realm(db: Database, named: Realm | None, directory: DirectoryLogin, username: str) -> Realm:
    """The realm of this log-in: the one it named, else by the rule above."""
    if named is not None:
        return named
    if not directory.enabled:
        return "local"
    local = await db.fetch_val(
        sa.select(sa.func.count())
        .select_from(users)
        .where(users.c.username == username, users.c.source == "local", users.c.role == "client")
    )
    return "local" if local else "directory"
