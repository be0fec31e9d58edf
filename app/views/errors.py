"""Error answers: JSON for the API and scripts, a page with the navigation for browsers."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from app.auth.session import wants_json

_CODES = {404: "not_found", 405: "method_not_allowed"}


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if wants_json(request):
        code = _CODES.get(exc.status_code, "http_error")
        return JSONResponse(
            {"error": code, "message": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )
    if exc.status_code == 404:
        templates = request.app.state.templates
        response: Response = templates.TemplateResponse(
            request, "errors/404.html", {"title": "Not found"}, status_code=404
        )
        return response
    return PlainTextResponse(str(exc.detail), status_code=exc.status_code, headers=exc.headers)


async def server_error(request: Request, exc: Exception) -> Response:
    message = "Something went wrong on the dashboard; the details are in its log."
    if wants_json(request):
        return JSONResponse({"error": "internal_error", "message": message}, status_code=500)
    return PlainTextResponse(message, status_code=500)


exception_handlers = {HTTPException: http_error, Exception: server_error}
