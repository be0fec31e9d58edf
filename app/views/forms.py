"""Small pieces every view uses: rendering with the session context, client address, redirects."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from app.api.errors import error_response
from app.auth.login import Area, LoggedIn, LoginAttempt, Refusal
from app.auth.session import csrf_token
from app.services import services_of

TOAST_KINDS = frozenset({"success", "info", "warning", "danger"})


def render(
    request: Request, template: str, context: dict[str, Any] | None = None, status_code: int = 200
) -> Response:
    templates = request.app.state.templates
    full = {
        "csrf_token": csrf_token(request),
        "user": getattr(request.state, "user", None),
        **(context or {}),
    }
    response: Response = templates.TemplateResponse(request, template, full, status_code=status_code)
    return response


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


async def record_action(request: Request, action: str, *, target: str = "", **details: Any) -> None:
    """Audit what the signed-in user did, and from where (never pass secrets in ``details``).

    An action taken through the admin API with a personal token names the token.
    """
    token = getattr(request.state, "api_token", None)
    if token is not None:
        details = {**details, "via_api_token": token.name}
    await services_of(request).audit.record(
        action,
        actor=request.state.user.username,
        target=target,
        client_address=client_address(request),
        **details,
    )


def safe_next(target: str | None, default: str = "/") -> str:
    """Only same-site relative paths are followed after log-in (no open redirect)."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    return target


def redirect_with_toast(path: str, message: str, kind: str = "success") -> RedirectResponse:
    """A 303 to ``path`` whose page shows ``message`` as a toast (toast.js reads and removes it)."""
    query = {"toast": message}
    if kind != "success" and kind in TOAST_KINDS:
        query["toast_kind"] = kind
    path, hash_mark, fragment = path.partition("#")
    separator = "&" if "?" in path else "?"
    return RedirectResponse(f"{path}{separator}{urlencode(query)}{hash_mark}{fragment}", status_code=303)


def json_error(code: str, message: str, status_code: int, **extra: Any) -> JSONResponse:
    """The one JSON error shape (:mod:`app.api.errors`): ``{"error": code, "message": text}`` plus details."""
    return error_response(status_code, code, message, **extra)


async def log_in_from_form(request: Request, area: Area) -> tuple[FormData, LoggedIn | Refusal]:
    """The log-in form's fields through the log-in service: (the form, the outcome)."""
    form = await request.form()
    outcome = await services_of(request).logins.log_in(
        LoginAttempt(
            username=str(form.get("username", "")),
            password=str(form.get("password", "")),
            address=client_address(request),
            area=area,
            realm=str(form.get("realm", "")) or None,
        )
    )
    return form, outcome


def with_retry_after(response: Response, refusal: Refusal) -> Response:
    if refusal.retry_after:
        response.headers["Retry-After"] = str(refusal.retry_after)
    return response
