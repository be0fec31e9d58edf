"""A request to the JSON APIs that carries a bearer token is authenticated by that token alone.

:class:`BearerOnlyMiddleware` sits outside the session middleware and removes the ``Cookie``
header of every ``/api/v1/...`` request with an ``Authorization: Bearer`` header, so no
session cookie rides along: such a request cannot act with the ambient credentials of a
browser, which is what makes skipping the CSRF check for it safe (:mod:`app.auth.csrf`),
and no session is read, refreshed or set by its answer. A bearer token that is wrong is
answered 401; it never falls back to a cookie.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

API_PREFIX = "/api/v1/"


def is_api_path(path: str) -> bool:
    """The JSON APIs that accept bearer tokens: the broker API and the admin API."""
    return path.startswith(API_PREFIX)


def bearer_token(scope: Scope) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or ``None`` (any other scheme, or none)."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class BearerOnlyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_api_path(scope["path"]) and bearer_token(scope) is not None:
            scope["headers"] = [(name, value) for name, value in scope["headers"] if name != b"cookie"]
        await self.app(scope, receive, send)
