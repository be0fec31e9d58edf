"""Small pieces every view uses: rendering with the session context, client address, redirects."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from app.auth.session import csrf_token


def render(request: Request, template: str, context: dict[str, Any] | None = None, status_code: int = 200) -> Response:
    templates = request.app.state.templates
    full = {"csrf_token": csrf_token(request), "user": getattr(request.state, "user", None), **(context or {})}
    response: Response = templates.TemplateResponse(request, template, full, status_code=status_code)
    return response


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


def safe_next(target: str | None, default: str = "/") -> str:
    """Only same-site relative paths are followed after log-in (no open redirect)."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    return target
