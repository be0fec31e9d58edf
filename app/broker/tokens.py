"""Bearer tokens of the broker API: 256-bit random, stored as SHA-256, short-lived, revocable."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from databases import Database

from app.clock import utcnow
from app.db.records import Record, fetch_record
from app.db.schema import api_tokens, users


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class _TokenRow(Record):
    """A token with its user, as checked on every API request."""

    id: int
    user_id: int
    groups_json: str
    expires_at: datetime | None
    created_at: datetime
    username: str
    display_name: str
    source: str
    role: str
    disabled: bool


@dataclass(frozen=True)
class TokenUser:
    token_id: int
    user_id: int
    username: str
    display_name: str
    source: str
    groups: tuple[str, ...]
    expires_at: datetime
    created_at: datetime


async def issue_token(
    db: Database,
    user_id: int,
    *,
    groups: tuple[str, ...] = (),
    client_address: str = "",
    ttl: int,
    now: datetime,
) -> tuple[str, datetime]:
    """A new token (returned once, never stored) and its expiry, ``ttl`` seconds after ``now``."""
    token = secrets.token_urlsafe(32)
    expires_at = now + timedelta(seconds=ttl)
    await db.execute(
        api_tokens.insert().values(
            token_hash=token_hash(token),
            user_id=user_id,
            groups_json=json.dumps(list(groups)),
            client_address=client_address,
            created_at=now,
            expires_at=expires_at,
        )
    )
    return token, expires_at


async def authenticate_token(db: Database, token: str, *, now: datetime) -> TokenUser | None:
    """The user of a valid token: known, not expired at ``now``, not revoked, user enabled."""
    if not token or len(token) > 128:
        return None
    row = await fetch_record(
        db,
        _TokenRow,
        sa.select(
            api_tokens.c.id,
            api_tokens.c.user_id,
            api_tokens.c.groups_json,
            api_tokens.c.expires_at,
            api_tokens.c.created_at,
            users.c.username,
            users.c.display_name,
            users.c.source,
            users.c.role,
            users.c.disabled,
        )
        .select_from(api_tokens.join(users, users.c.id == api_tokens.c.user_id))
        .where(
            api_tokens.c.token_hash == token_hash(token),
            api_tokens.c.kind == "login",
            api_tokens.c.revoked_at.is_(None),
        ),
    )
    if row is None or row.expires_at is None or row.expires_at <= now or row.disabled:
        return None
    if row.role != "client":
        return None
    return TokenUser(
        token_id=row.id,
        user_id=row.user_id,
        username=row.username,
        display_name=row.display_name,
        source=row.source,
        groups=tuple(json.loads(row.groups_json)),
        expires_at=row.expires_at,
        created_at=row.created_at,
    )


async def set_token_groups(db: Database, token_id: int, groups: tuple[str, ...]) -> None:
    await db.execute(
        api_tokens.update().where(api_tokens.c.id == token_id).values(groups_json=json.dumps(list(groups)))
    )


async def revoke_token(db: Database, token_id: int) -> None:
    await db.execute(
        api_tokens.update()
        .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


async def revoke_user_tokens(db: Database, user_id: int) -> None:
    await db.execute(
        api_tokens.update()
        .where(api_tokens.c.user_id == user_id, api_tokens.c.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


async def purge_expired(db: Database, *, now: datetime, older_than: timedelta = timedelta(days=1)) -> None:
    await db.execute(api_tokens.delete().where(api_tokens.c.expires_at < now - older_than))
