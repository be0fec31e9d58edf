"""Server-side sessions: the cookie carries a random id, the database its SHA-256 and everything else.

A session row holds the user, the role it was started with, the directory groups
resolved at log-in (however many: a user in dozens of AD groups keeps a small
cookie) and two timestamps. A session ends ``security.session_max_age`` seconds
after log-in and after ``security.session_idle_timeout`` seconds without a
request; both are checked here, on the server. Deleting the rows ends sessions
at once, wherever their cookies are: log-out ends its own session; a password
change or reset and disabling a user end every session and API token of that
user (:func:`revoke_user_credentials`).

A directory user's groups are not taken on trust for the session's whole life:
every ``directory.groups_recheck`` seconds of use the service account reads the
account again (:meth:`SessionStore.recheck_groups`, and for broker API tokens
:meth:`SessionStore.recheck_token_groups`); new groups replace the stored
ones, and an account the directory no longer has (or, AD, has disabled) loses
every session and API token at once.
"""

from __future__ import annotations

import enum
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from databases import Database

from app.auth.session import SessionRules
from app.auth.session_cookie import session_hash
from app.broker.tokens import TokenUser, purge_expired, revoke_user_tokens, set_token_groups
from app.db.records import Record
from app.db.schema import sessions, users
from app.directory import DirectoryError, DirectoryLogin

log = logging.getLogger("kvmvdi.auth")


@dataclass(frozen=True)
class SessionRecord(Record):
    """A ``sessions`` row as the guards see it, read joined with its user's row."""

    id: int
    user_id: int
    role: str
    groups: tuple[str, ...]
    created_at: datetime
    seen_at: datetime
    # When it ends without further requests: the earlier of its absolute and idle limits.
    ends_at: datetime


# Ended sessions and expired API tokens are deleted at most this often (seconds), by a log-in.
PURGE_INTERVAL = 3600
# Sessions whose last group reading this process remembers (the oldest are forgotten first:
# a forgotten one is read again at its next use, no more).
RECHECK_MEMORY = 50_000
# After a failed reading (directory down), the next try comes this many seconds later.
RECHECK_RETRY = 60


class Keep(enum.Enum):
    """The stored groups stay (not due yet, or the directory could not be read)."""

    KEEP = "keep"


KEEP = Keep.KEEP


class SessionStore:
    def __init__(self, db: Database, rules: SessionRules, directory: DirectoryLogin) -> None:
        self._db = db
        self._rules = rules
        self._directory = directory
        self._next_purge = 0.0
        # ("session" | "token", row id) -> when its groups were last read (log-in counts as one)
        self._groups_read: OrderedDict[tuple[str, int], datetime] = OrderedDict()

    async def create(
        self,
        session_id: str,
        *,
        user_id: int,
        role: str,
        groups: tuple[str, ...] = (),
        client_address: str = "",
    ) -> None:
        clock = self._rules.clock
        if clock.monotonic() >= self._next_purge:
            self._next_purge = clock.monotonic() + PURGE_INTERVAL
            await self.purge()
        now = self._rules.now()
        await self._db.execute(
            sessions.insert().values(
                id_hash=session_hash(session_id),
                user_id=user_id,
                role=role,
                groups_json=json.dumps(list(groups)),
                client_address=client_address[:64],
                created_at=now,
                seen_at=now,
            )
        )

    async def lookup(self, session_id: str, *, touch: bool = True) -> tuple[SessionRecord, Any] | None:
        """The live session of this id and its user's row; ``None`` when it has ended, however.

        ``touch``: this is a request of the user's (it keeps the session from idling out);
        an open websocket only looks.
        """
        row: Any = await self._db.fetch_one(
            sa.select(
                sessions.c.id.label("session_id"),
                sessions.c.role.label("session_role"),
                sessions.c.groups_json,
                sessions.c.created_at,
                sessions.c.seen_at,
                users,
            )
            .select_from(sessions.join(users, users.c.id == sessions.c.user_id))
            .where(sessions.c.id_hash == session_hash(session_id))
        )
        if row is None:
            return None
        rules = self._rules
        record = SessionRecord(
            id=int(row.session_id),
            user_id=int(row.id),
            role=str(row.session_role),
            groups=tuple(json.loads(row.groups_json)),
            created_at=row.created_at,
            seen_at=row.seen_at,
            ends_at=rules.ends_at(row.created_at, row.seen_at),
        )
        now = rules.now()
        if rules.expired(record.created_at, record.seen_at, now) or row.disabled or row.role != record.role:
            await self._db.execute(sessions.delete().where(sessions.c.id == record.id))
            return None
        if touch and rules.seen_due(record.seen_at, now):
            await self._db.execute(sessions.update().where(sessions.c.id == record.id).values(seen_at=now))
            record = replace(record, seen_at=now, ends_at=rules.ends_at(record.created_at, now))
        return record, row

    async def recheck_groups(self, record: SessionRecord, username: str) -> SessionRecord | None:
        """A directory user's session with its groups read again when due; ``None``: it has ended."""
        fresh = await self._fresh_groups(("session", record.id), record.created_at, username, record.user_id)
        if fresh is None:
            return None
        if fresh is not KEEP and fresh != record.groups:
            await self._db.execute(
                sessions.update()
                .where(sessions.c.id == record.id)
                .values(groups_json=json.dumps(list(fresh)))
            )
            record = replace(record, groups=fresh)
        return record

    async def recheck_token_groups(self, user: TokenUser) -> TokenUser | None:
        """The same for a broker API token: its groups read again when due; ``None``: revoked."""
        fresh = await self._fresh_groups(
            ("token", user.token_id), user.created_at, user.username, user.user_id
        )
        if fresh is None:
            return None
        if fresh is not KEEP and fresh != user.groups:
            await set_token_groups(self._db, user.token_id, fresh)
            user = replace(user, groups=fresh)
        return user

    async def _fresh_groups(
        self, key: tuple[str, int], since: datetime, username: str, user_id: int
    ) -> tuple[str, ...] | Keep | None:
        """The account's groups read again now (``KEEP``: not due, or unreadable); ``None``: the
        directory no longer has the account (or has disabled it), and its credentials have ended.

        Unreachable directory: the stored groups stay, and the reading is tried again a
        minute later (a directory outage does not log everybody out).
        """
        directory = self._directory
        if not directory.can_recheck:
            return KEEP
        now = self._rules.now()
        interval = timedelta(seconds=directory.config.groups_recheck)
        if now - self._groups_read.get(key, since) < interval:
            return KEEP
        self._remember_reading(key, now)
        try:
            identity = await directory.lookup(username)
        except DirectoryError as exc:
            log.warning("groups of %r not read again, the stored ones stay: %s", username, exc)
            self._remember_reading(key, now - interval + timedelta(seconds=RECHECK_RETRY))
            return KEEP
        if identity is None:
            log.warning("directory account %r is gone or disabled: its sessions and API tokens end", username)
            await revoke_user_credentials(self._db, user_id)
            return None
        return tuple(sorted({*identity.groups, *identity.group_dns}))

    def _remember_reading(self, key: tuple[str, int], when: datetime) -> None:
        self._groups_read[key] = when
        self._groups_read.move_to_end(key)
        while len(self._groups_read) > RECHECK_MEMORY:
            self._groups_read.popitem(last=False)

    async def end(self, session_id: str) -> None:
        await self._db.execute(sessions.delete().where(sessions.c.id_hash == session_hash(session_id)))

    async def purge(self) -> None:
        """Delete sessions past their lifetime or idle limit, and API tokens expired a day ago."""
        now, rules = self._rules.now(), self._rules
        await self._db.execute(
            sessions.delete().where(
                sa.or_(
                    sessions.c.created_at < now - timedelta(seconds=rules.max_age),
                    sessions.c.seen_at < now - timedelta(seconds=rules.idle_timeout),
                )
            )
        )
        await purge_expired(self._db, now=now)


async def revoke_user_credentials(db: Database, user_id: int) -> None:
    """End every session and revoke every API token of this user, at once."""
    await db.execute(sessions.delete().where(sessions.c.user_id == user_id))
    await revoke_user_tokens(db, user_id)
