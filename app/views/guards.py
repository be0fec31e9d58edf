"""Who may reach a handler: the signed-in user of a request and the role guards.

Every guarded request reads its server-side session with the user row
(:func:`app.auth.session.session_user`), so an ended session, a disabled user or a
changed role takes effect at once.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from app.auth.session import Role, SessionUser, session_user
from app.i18n import gettext as _
from app.services import services_of

Endpoint = Callable[[Request], Awaitable[Response]]


async def current_user(conn: HTTPConnection) -> SessionUser | None:
    """The signed-in user of this request or websocket, or ``None``."""
    services = services_of(conn)
    return await session_user(conn, services.sessions)


def wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return request.url.path.startswith("/api/") or (
        "application/json" in accept and "text/html" not in accept
    )


def _login_redirect(request: Request, login_path: str) -> Response:
    if wants_json(request):
        return JSONResponse({"error": "login_required", "message": _("Log in first.")}, status_code=401)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{login_path}?next={quote(target)}", status_code=303)


def _forbidden(request: Request) -> Response:
    if wants_json(request):
        return JSONResponse({"error": "forbidden", "message": _("Not allowed for this account.")}, 403)
    templates = request.app.state.templates
    return templates.TemplateResponse(
        request, "errors/403.html", {"title": _("Not allowed")}, status_code=403
    )


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
                        {"error": "password_change_required", "message": _("Change your password first.")},
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
