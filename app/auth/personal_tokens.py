"""Personal API tokens: how an administrator's scripts use the admin API.

An administrator makes a token on the API tokens page (or through the API): a name, an
optional expiry, and optionally read-only (GET only). The token is shown once; the
database keeps its SHA-256 (256 random bits need no slow hash) in ``api_tokens`` with
``kind = "personal"``. A token works only while its user is an enabled administrator; it
ends when revoked, when it expires, when the user's password is changed or reset, or
when the user is disabled or deleted. Whether it has expired is read on the dashboard's
clock (:mod:`app.clock`), handed in as ``now`` by the caller. It authenticates alone:
requests carrying it bring no cookie and need no CSRF token (see :mod:`app.auth.bearer`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from databases import Database

from app.broker.tokens import token_hash
from app.db.records import Record, fetch_record, fetch_records
from app.db.schema import api_tokens, users

# Recognisable in a leaked configuration file or a log scan; the rest is 256 random bits.
PREFIX = "kvd_"
# Record a token's last use at most this often (seconds): no database write per request.
LAST_USED_RESOLUTION = 60
MAX_NAME = 64


@dataclass(frozen=True)
class PersonalToken(Record):
    """A personal token with its administrator's name (``api_tokens`` joined with ``users``)."""

    id: int
    user_id: int
    username: str
    display_name: str
    source: str
    name: str
    read_only: bool
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    client_address: str


@dataclass(frozen=True)
class _Presented(PersonalToken):
    """A token as checked on a request: with whether its user may still use it."""

    role: str
    disabled: bool


def _columns() -> list[Any]:
    return [
        api_tokens.c.id,
        api_tokens.c.user_id,
        api_tokens.c.name,
        api_tokens.c.read_only,
        api_tokens.c.created_at,
        api_tokens.c.expires_at,
        api_tokens.c.last_used_at,
        api_tokens.c.client_address,
        users.c.username,
        users.c.display_name,
        users.c.source,
    ]


def _live(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        api_tokens.c.kind == "personal",
        api_tokens.c.revoked_at.is_(None),
        sa.or_(api_tokens.c.expires_at.is_(None), api_tokens.c.expires_at > now),
    )


async def create_token(
    db: Database,
    user_id: int,
    name: str,
    *,
    read_only: bool = False,
    expires_in_days: int | None = None,
    client_address: str = "",
    now: datetime,
) -> tuple[str, PersonalToken]:
    """A new token: the secret (returned here once, never stored) and its record."""
    secret = PREFIX + secrets.token_urlsafe(32)
    expires_at = now + timedelta(days=expires_in_days) if expires_in_days else None
    token_id = await db.execute(
        api_tokens.insert().values(
            token_hash=token_hash(secret),
            user_id=user_id,
            kind="personal",
            name=name.strip()[:MAX_NAME],
            read_only=read_only,
            client_address=client_address[:64],
            created_at=now,
            expires_at=expires_at,
        )
    )
    found = await get_token(db, int(token_id), now=now)
    assert found is not None
    return secret, found


async def get_token(
    db: Database, token_id: int, *, now: datetime, user_id: int | None = None
) -> PersonalToken | None:
    """A live personal token (of ``user_id`` when given)."""
    query = (
        sa.select(*_columns())
        .select_from(api_tokens.join(users, users.c.id == api_tokens.c.user_id))
        .where(api_tokens.c.id == token_id, _live(now))
    )
    if user_id is not None:
        query = query.where(api_tokens.c.user_id == user_id)
    return await fetch_record(db, PersonalToken, query)


async def list_tokens(db: Database, *, now: datetime, user_id: int | None = None) -> list[PersonalToken]:
    """Live personal tokens, newest first (of one administrator, or of all)."""
    query = (
        sa.select(*_columns())
        .select_from(api_tokens.join(users, users.c.id == api_tokens.c.user_id))
        .where(_live(now))
        .order_by(api_tokens.c.id.desc())
    )
    if user_id is not None:
        query = query.where(api_tokens.c.user_id == user_id)
    return await fetch_records(db, PersonalToken, query)


async def revoke(db: Database, token_id: int, *, now: datetime) -> None:
    await db.execute(
        api_tokens.update()
        .where(
            api_tokens.c.id == token_id, api_tokens.c.kind == "personal", api_tokens.c.revoked_at.is_(None)
        )
        .values(revoked_at=now)
    )


async def authenticate(db: Database, secret: str, *, now: datetime) -> PersonalToken | None:
    """The live token at ``now`` of an enabled administrator whose secret this is, or ``None``."""
    if not secret.startswith(PREFIX) or len(secret) > 128:
        return None
    row = await fetch_record(
        db,
        _Presented,
        sa.select(*_columns(), users.c.role, users.c.disabled)
        .select_from(api_tokens.join(users, users.c.id == api_tokens.c.user_id))
        .where(api_tokens.c.token_hash == token_hash(secret), _live(now)),
    )
    if row is None or row.disabled or row.role != "admin":
        return None
    token: PersonalToken = row
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() >= LAST_USED_RESOLUTION:
        await db.execute(api_tokens.update().where(api_tokens.c.id == token.id).values(last_used_at=now))
    return token
