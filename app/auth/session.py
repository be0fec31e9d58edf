"""Who is logged in: the server-side session behind the cookie, and the rules of its lifetime.

The cookie (:mod:`app.auth.session_cookie`) carries only a random id; the session
itself (user, role, directory groups, two timestamps) lives in the database
(:mod:`app.auth.sessions`), where log-out, a password change or reset and
disabling a user end it at once. A session ends ``security.session_max_age``
seconds after log-in and after ``security.session_idle_timeout`` seconds without
a request (:class:`SessionRules`, the one place these rules live); both are
checked on the server. Every check reads the session with its user row, so
disabling a user or changing a role takes effect at once too. The guards
handlers use are in :mod:`app.views.guards`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from starlette.requests import HTTPConnection, Request

from app.auth.session_cookie import session_cookie
from app.clock import SYSTEM_CLOCK, Clock
from app.settings import SecuritySettings

if TYPE_CHECKING:
    from app.auth.sessions import SessionStore

Role = Literal["admin", "client"]


@dataclass(frozen=True)
class SessionUser:
    id: int
    username: str
    role: Role
    source: str
    must_change_password: bool
    display_name: str = ""
    # Directory groups resolved at login (empty for local users), kept in the session row.
    groups: tuple[str, ...] = field(default_factory=tuple)
    # When the session ends unless another request comes (naive UTC, the clock's).
    ends_at: datetime | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def csrf_token(conn: HTTPConnection) -> str:
    """The CSRF token of this browser's current session id."""
    return session_cookie(conn).csrf_token()


# Refresh a session's "seen" stamp at most this often (seconds): precise enough for an idle
# timeout, without a database write on every request.
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

    def now(self) -> datetime:
        return self.clock.now()

    def ends_at(self, created_at: datetime, seen_at: datetime) -> datetime:
        """When a session started at ``created_at`` and last used at ``seen_at`` ends."""
        return min(
            created_at + timedelta(seconds=self.max_age), seen_at + timedelta(seconds=self.idle_timeout)
        )

    def expired(self, created_at: datetime, seen_at: datetime, now: datetime) -> bool:
        return now > self.ends_at(created_at, seen_at)

    def seen_due(self, seen_at: datetime, now: datetime) -> bool:
        """Whether the "seen" stamp is old enough to be renewed (precision a quarter of the idle timeout)."""
        resolution = min(SEEN_RESOLUTION, self.idle_timeout // 4)
        return (now - seen_at).total_seconds() >= resolution


async def start_session(
    request: Request, user: Any, store: SessionStore, *, groups: tuple[str, ...] = ()
) -> None:
    """Log ``user`` (a users row or a SessionUser) in: a fresh session id (no fixation), fresh CSRF token."""
    cookie = session_cookie(request)
    if cookie.sent is not None:
        await store.end(cookie.sent)
    await store.create(
        cookie.renew(),
        user_id=int(user.id),
        role=str(user.role),
        groups=groups,
        client_address=request.client.host if request.client else "",
    )
    request.scope.pop("kvmvdi.user", None)


async def end_session(request: Request, store: SessionStore) -> None:
    """Log this browser out: its session ends on the server, and it gets a new, empty id."""
    cookie = session_cookie(request)
    if cookie.sent is not None:
        await store.end(cookie.sent)
    cookie.renew()
    request.scope.pop("kvmvdi.user", None)


async def session_user(conn: HTTPConnection, store: SessionStore) -> SessionUser | None:
    """The user of this request's session, or ``None`` (none, ended, expired, user disabled, role changed)."""
    cached = conn.scope.get("kvmvdi.user")
    if isinstance(cached, SessionUser):
        return cached
    cookie = session_cookie(conn)
    if cookie.sent is None or cookie.changed:
        return None
    # A request keeps its session from idling out; an open websocket only looks.
    touch = conn.scope["type"] == "http"
    found = await store.lookup(cookie.sent, touch=touch)
    if found is None:
        return None
    record, row = found
    if touch and row.source == "directory":
        rechecked = await store.recheck_groups(record, row.username)
        if rechecked is None:
            return None
        record = rechecked
    user = SessionUser(
        id=row.id,
        username=row.username,
        role=row.role,
        source=row.source,
        must_change_password=bool(row.must_change_password),
        display_name=row.display_name,
        groups=record.groups,
        ends_at=record.ends_at,
    )
    conn.scope["kvmvdi.user"] = user
    return user
