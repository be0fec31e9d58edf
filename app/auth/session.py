"""Who is logged in: the signed session cookie and the rules of its lifetime.

The cookie (Starlette's SessionMiddleware: itsdangerous-signed, HttpOnly,
SameSite=Lax, Secure behind https) carries only ids, two timestamps and the
CSRF token. A session ends ``security.session_max_age`` seconds after log-in
and after ``security.session_idle_timeout`` seconds without a request
(:class:`SessionRules`, the one place these rules live); both are checked on the
server, not left to the browser. Every check re-reads the user row, so disabling
a user or changing a role takes effect at once. The guards handlers use are in
:mod:`app.views.guards`.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from databases import Database
from starlette.requests import HTTPConnection, Request

from app.clock import SYSTEM_CLOCK, Clock
from app.db.schema import users
from app.settings import SecuritySettings

Role = Literal["admin", "client"]


@dataclass(frozen=True)
class SessionUser:
    id: int
    username: str
    role: Role
    source: str
    must_change_password: bool
    display_name: str = ""
    # Directory groups resolved at login (empty for local users).
    groups: tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def csrf_token(conn: HTTPConnection) -> str:
    """The session's CSRF token, created on first use."""
    session = conn.session
    token = session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return str(token)


# Re-sign the cookie with a fresh "seen" stamp at most this often (seconds): enough
# precision for an idle timeout, without a new Set-Cookie on every request.
SEEN_RESOLUTION = 30


@dataclass(frozen=True)
class SessionRules:
    """When a session ends: ``max_age`` seconds after log-in or ``idle_timeout`` after the last request."""

    max_age: int
    idle_timeout: int
    clock: Clock = SYSTEM_CLOCK

    @classmethod
    def from_settings(cls, security: SecuritySettings, clock: Clock = SYSTEM_CLOCK) -> SessionRules:
        return cls(max_age=security.session_max_age, idle_timeout=security.session_idle_timeout, clock=clock)

    def now(self) -> int:
        """Epoch seconds: the cookie's stamps."""
        return int(self.clock.time())

    def deadline(self, session: Mapping[str, Any]) -> float:
        """When this session ends unless the user makes another request (epoch seconds; 0: malformed)."""
        since = session.get("since")
        seen = session.get("seen", since)
        if not isinstance(since, int) or not isinstance(seen, int):
            return 0.0
        return float(min(since + self.max_age, seen + self.idle_timeout))

    def expired(self, session: Mapping[str, Any], now: float) -> bool:
        """Past the absolute lifetime since log-in, or idle for longer than the idle timeout."""
        return now > self.deadline(session)

    def seen_due(self, session: Mapping[str, Any], now: int) -> bool:
        """Whether the "seen" stamp is old enough to be renewed (precision a quarter of the idle timeout)."""
        resolution = min(SEEN_RESOLUTION, self.idle_timeout // 4)
        return now - int(session.get("seen", 0)) >= resolution


def start_session(request: Request, user: Any, rules: SessionRules, *, groups: tuple[str, ...] = ()) -> None:
    """Log ``user`` (a users row) in: a fresh session (no fixation), fresh CSRF token."""
    now = rules.now()
    request.session.clear()
    request.session.update(
        {
            "uid": int(user.id),
            "role": user.role,
            "groups": list(groups),
            "since": now,
            "seen": now,
            "csrf": secrets.token_urlsafe(32),
        }
    )


def end_session(request: Request) -> None:
    request.session.clear()


async def session_user(conn: HTTPConnection, db: Database, rules: SessionRules) -> SessionUser | None:
    """The user of this request's session, or ``None`` (no session, expired, disabled, role changed)."""
    uid = conn.session.get("uid")
    if uid is None:
        return None
    cached = conn.scope.get("kvmvdi.user")
    if isinstance(cached, SessionUser):
        return cached
    now = rules.now()
    if rules.expired(conn.session, now):
        conn.session.clear()
        return None
    row: Any = await db.fetch_one(users.select().where(users.c.id == int(uid)))
    if row is None or row.disabled or row.role != conn.session.get("role"):
        conn.session.clear()
        return None
    if conn.scope["type"] == "http" and rules.seen_due(conn.session, now):
        conn.session["seen"] = now
    user = SessionUser(
        id=row.id,
        username=row.username,
        role=row.role,
        source=row.source,
        must_change_password=bool(row.must_change_password),
        display_name=row.display_name,
        groups=tuple(conn.session.get("groups", ())),
    )
    conn.scope["kvmvdi.user"] = user
    return user
