"""Who may use the portal and the broker API: local client accounts and directory users.

The name rule: a login names its realm. A local account and a directory account
may share a user name; they are two different accounts, and one login
authenticates exactly one of them: ``realm="local"`` checks the local password
only, ``realm="directory"`` asks the directory only. Without a realm, the login
goes to the directory when one is configured, otherwise to the local accounts.
So a directory password never opens a local account of the same name, a local
password never opens the directory account, and nothing falls back silently
from one to the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from databases import Database

from app.auth.accounts import authenticate_local
from app.directory import DirectoryLogin
from app.directory.accounts import upsert_directory_user

Realm = Literal["local", "directory"]
REALMS: tuple[Realm, ...] = ("local", "directory")


class RealmError(ValueError):
    pass


@dataclass(frozen=True)
class ClientLogin:
    user: Any  # users row
    groups: tuple[str, ...]  # directory group names and DNs (empty for local accounts)


def resolve_realm(requested: str | None, directory: DirectoryLogin) -> Realm:
    if not requested:
        return "directory" if directory.enabled else "local"
    if requested not in REALMS:
        raise RealmError("realm must be 'local' or 'directory'")
    if requested == "directory" and not directory.enabled:
        raise RealmError("directory login is not configured")
    return "directory" if requested == "directory" else "local"


async def authenticate_client(
    db: Database, directory: DirectoryLogin, username: str, password: str, realm: Realm
) -> ClientLogin | None:
    """The client account for these credentials in ``realm``, or ``None``.

    Raises ``DirectoryUnavailable`` when the directory cannot answer.
    """
    if realm == "local":
        row = await authenticate_local(db, username, password)
        if row is None or row.role != "client":
            return None
        return ClientLogin(user=row, groups=())
    identity = await directory.authenticate(username, password)
    if identity is None:
        return None
    row = await upsert_directory_user(db, identity)
    if row.disabled:
        return None
    return ClientLogin(user=row, groups=tuple(sorted({*identity.groups, *identity.group_dns})))
