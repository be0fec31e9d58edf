"""Who is logged in: the signed session cookie and the guards handlers use.

The cookie (Starlette's SessionMiddleware: itsdangerous-signed, HttpOnly,
SameSite=Lax, Secure behind https) carries only ids, two timestamps and the
CSRF token. A session ends ``security.session_max_age`` seconds after log-in
and after ``security.session_idle_timeout`` seconds without a request; both are
checked here on the server, not left to the browser. Every guarded request
re-reads the user row, so disabling a user or changing a role takes effect at
once.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from app.db.schema import users
from app.services import services_of
from app.settings import SecuritySettings

Role = Literal["admin", "client"]
Endpoint = Callable[[Request], Awaitable[Response]]


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


def start_session(request: Request, user: Any, *, groups: tuple[str, ...] = ()) -> None:
    """Log ``user`` (a users row) in: a fresh session (no fixation), fresh CSRF token."""
    now = int(time.time())
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


def session_expired(session: dict[str, Any], security: SecuritySettings, now: float) -> bool:
    """Past the absolute lifetime since log-in, or idle for longer than the idle timeout."""
    since = session.get("since")
    seen = session.get("seen", since)
    if not isinstance(since, int) or not isinstance(seen, int):
        return True
    return now - since > security.session_max_age or now - seen > security.session_idle_timeout


async def current_user(conn: HTTPConnection) -> SessionUser | None:
    uid = conn.session.get("uid")
    if uid is None:
        return None
    cached = conn.scope.get("kvmvdi.user")
    if isinstance(cached, SessionUser):
        return cached
    services = services_of(conn)
    now = int(time.time())
    if session_expired(conn.session, services.settings.security, now):
        conn.session.clear()
        return None
    row: Any = await services.db.fetch_one(users.select().where(users.c.id == int(uid)))
    if row is None or row.disabled or row.role != conn.session.get("role"):
        conn.session.clear()
        return None
    resolution = min(SEEN_RESOLUTION, services.settings.security.session_idle_timeout // 4)
    if conn.scope["type"] == "http" and now - int(conn.session.get("seen", 0)) >= resolution:
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


def wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return request.url.path.startswith("/api/") or (
        "application/json" in accept and "text/html" not in accept
    )


def _login_redirect(request: Request, login_path: str) -> Response:
    if wants_json(request):
        return JSONResponse({"error": "login_required", "message": "Log in first."}, status_code=401)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{login_path}?next={quote(target)}", status_code=303)


def _forbidden(request: Request) -> Response:
    if wants_json(request):
        return JSONResponse({"error": "forbidden", "message": "Not allowed for this account."}, 403)
    templates = request.app.state.templates
    return templates.TemplateResponse(request, "errors/403.html", {"title": "Not allowed"}, status_code=403)


def require_role(
    role: Role, *, login_path: str, allow_pending_password: bool = False
) -> Callable[[Endpoint], Endpoint]:
    """Guard an endpoint: only a logged-in user with ``role`` gets through.

    Users who must change their password are sent to the change page first.
    """

    def decorate(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            user = await current_user(request)
            if user is None:
                return _login_redirect(request, login_path)
            if user.role != role:
                return _forbidden(request)
            if user.must_change_password and not allow_pending_password:
                if wants_json(request):
                    return JSONResponse(
                        {"error": "password_change_required", "message": "Change your password first."},
                        status_code=403,
                    )
                return RedirectResponse("/account/password", status_code=303)
            request.state.user = user
            return await endpoint(request)

        # Lets tests enumerate every guarded route and prove the guard holds.
        guarded.required_role = role  # type: ignore[attr-defined]
        return guarded

    return decorate


admin_required = require_role("admin", login_path="/login")
client_required = require_role("client", login_path="/client/login")
