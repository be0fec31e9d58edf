"""Error answers: JSON (the one error model) for the API and scripts, a page with the navigation
for browsers."""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from app.api.errors import ApiError, api_error, error_response
from app.db.errors import INTEGRITY_ERRORS
from app.db.health import DatabaseUnavailable
from app.i18n import N_
from app.i18n import gettext as _
from app.services import services_of
from app.views.guards import wants_json

_CODES = {404: "not_found", 405: "method_not_allowed"}
# Starlette's default details (the HTTP reason phrases), said in the reader's language.
_PHRASES = {"Not Found": N_("Not found"), "Method Not Allowed": N_("Method not allowed")}


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if wants_json(request):
        code = _CODES.get(exc.status_code, "http_error")
        message = _(_PHRASES.get(str(exc.detail), str(exc.detail)))
        return error_response(exc.status_code, code, message, headers=exc.headers)
    if exc.status_code == 404:
        templates = request.app.state.templates
        response: Response = templates.TemplateResponse(
            request, "errors/404.html", {"title": _("Not found")}, status_code=404
        )
        return response
    return PlainTextResponse(str(exc.detail), status_code=exc.status_code, headers=exc.headers)


async def server_error(request: Request, exc: Exception) -> Response:
    message = _("Something went wrong on the dashboard; the details are in its log.")
    if wants_json(request):
        return error_response(500, "internal_error", message)
    return PlainTextResponse(message, status_code=500)


async def conflict(request: Request, exc: Exception) -> Response:
    """A unique name taken by a change made at the same moment (the checks before could not see it)."""
    message = _("This conflicts with a change made at the same time (a name already taken?). Try again.")
    if wants_json(request):
        return error_response(409, "conflict", message)
    return PlainTextResponse(message, status_code=409)


async def database_unavailable(request: Request, exc: Exception) -> Response:
    """The database is out of reach: 503 with Retry-After, never a 500 or a hung request."""
    retry_after = services_of(request).db.health.retry_after
    headers = {"Retry-After": str(retry_after)}
    if wants_json(request):
        message = _("The dashboard's database cannot be reached right now. Try again in a few seconds.")
        return error_response(503, "database_unavailable", message, headers=headers)
    templates = request.app.state.templates
    response: Response = templates.TemplateResponse(
        request,
        "errors/503.html",
        {"title": _("Service degraded"), "retry_after": retry_after},
        status_code=503,
        headers=headers,
    )
    return response


exception_handlers: dict[Any, Any] = {
    HTTPException: http_error,
    ApiError: api_error,
    **dict.fromkeys(INTEGRITY_ERRORS, conflict),
    DatabaseUnavailable: database_unavailable,
    Exception: server_error,
}
