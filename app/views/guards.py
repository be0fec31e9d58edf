"""Who may reach a handler: the signed-in user of a request, the role guards, and the admin API's
guard (:func:`admin_api`: an administrator's personal API token, or the admin session).

Every guarded request reads its server-side session with the user row
(:func:`app.auth.session.session_user`), so an ended session, a disabled user or a
changed role takes effect at once.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from starlette.requests import HTTPConnection, Request
from starlette.responses import RedirectResponse, Response

from app.api.errors import error_response
from app.auth import personal_tokens
from app.auth.bearer import bearer_token
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
        return error_response(401, "login_required", _("Log in first."))
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{login_path}?next={quote(target)}", status_code=303)


def _forbidden(request: Request) -> Response:
    if wants_json(request):
        return error_response(403, "forbidden", _("Not allowed for this account."))
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
                    return error_response(403, "password_change_required", _("Change your password first."))
                return RedirectResponse("/account/password", status_code=303)
            request.state.user = user
            return await endpoint(request)

        # Lets tests enumerate every guarded route and prove the guard holds.
        guarded.required_role = role  # type: ignore[attr-defined]
        return guarded

    return decorate


admin_required = require_role("admin", login_path="/login")
client_required = require_role("client", login_path="/client/login")


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def admin_api(endpoint: Endpoint) -> Endpoint:
    """The admin API's guard: with an ``Authorization: Bearer`` header the token alone
    authenticates (its cookie was already removed by :class:`app.auth.bearer.BearerOnlyMiddleware`,
    and the CSRF check does not apply); a read-only token may only read. Without one, the admin
    session cookie applies, with its CSRF check, as for the pages' own calls."""
    by_session = admin_required(endpoint)

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        secret = bearer_token(request.scope)
        if secret is None:
            return await by_session(request)
        services = services_of(request)
        token = await personal_tokens.authenticate(services.db, secret, now=services.clock.now())
        if token is None:
            return error_response(
                401,
                "invalid_token",
                _("This token is unknown, expired or revoked: make one on the API tokens page."),
                headers={"WWW-Authenticate": 'Bearer realm="kvm-vdi admin"'},
            )
        if token.read_only and request.method not in SAFE_METHODS:
            return error_response(
                403,
                "read_only_token",
                _("Token {name} may only read: make a full token to change things.").format(
                    name=repr(token.name)
                ),
            )
        request.state.user = SessionUser(
            id=token.user_id,
            username=token.username,
            role="admin",
            source=token.source,
            must_change_password=False,
            display_name=token.display_name,
        )
        request.state.api_token = token
        return await endpoint(request)

    # Lets tests enumerate every guarded route and prove the guard holds.
    guarded.required_role = "admin"  # type: ignore[attr-defined]
    return guarded
