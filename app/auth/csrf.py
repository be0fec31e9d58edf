"""CSRF protection for every state-changing request made with the session cookie.

The token (derived from the session cookie's id: :mod:`app.auth.session_cookie`)
must come back in the ``X-CSRF-Token``
header (fetch/XHR, and any multipart upload) or the ``csrf_token`` field of an
urlencoded form. Requests to the JSON APIs (``/api/v1/...``) that carry an
``Authorization: Bearer`` header are not checked: their cookie was removed before
the session was read (:mod:`app.auth.bearer`), so they bring no ambient credentials,
and their handlers authenticate by the token alone (a broker log-in token, or an
administrator's personal token on the admin API). Anywhere else a bearer header
changes nothing, since those handlers authenticate by the session cookie.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response
from app.auth.session_cookie import SCOPE_KEY, SessionCookie
from app.i18n import gettext as _

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# Larger bodies are not parsed for a form token (they must use the header).
FORM_BODY_LIMIT = 1024 * 1024


class CSRFMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        exempt_paths: frozenset[str] = frozenset(),
        bearer_paths: Callable[[str], bool] = lambda _path: False,
    ) -> None:
        self.app = app
        self.exempt_paths = exempt_paths
        # Paths whose handlers authenticate by the bearer header alone.
        self.bearer_paths = bearer_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS or scope["path"] in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if self.bearer_paths(scope["path"]) and request.headers.get("authorization", "").lower().startswith(
            "bearer "
        ):
            await self.app(scope, receive, send)
            return
        cookie: SessionCookie = scope[SCOPE_KEY]
        # Only the id this browser sent can vouch for the token it sends.
        expected = cookie.csrf_token() if cookie.sent is not None else None
        supplied = request.headers.get("x-csrf-token")
        body_messages: list[Message] = []
        content_type = request.headers.get("content-type", "")
        if supplied is None and content_type.startswith("application/x-www-form-urlencoded"):
            body, body_messages = await _read_body(receive)
            supplied = _form_token(body)
        if not expected or not supplied or not hmac.compare_digest(str(expected), supplied):
            response = _rejection(request)
            await response(scope, receive, send)
            return
        await self.app(scope, _replay(body_messages, receive) if body_messages else receive, send)


async def _read_body(receive: Receive) -> tuple[bytes, list[Message]]:
    messages: list[Message] = []
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= FORM_BODY_LIMIT:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return (b"".join(chunks) if size <= FORM_BODY_LIMIT else b""), messages


def _form_token(body: bytes) -> str | None:
    values = parse_qs(body.decode("latin-1"), keep_blank_values=True).get("csrf_token")
    return values[0] if values else None


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def _rejection(request: Request) -> Response:
    message = _("CSRF token missing or invalid: reload the page and try again.")
    if request.url.path.startswith("/api/") or "application/json" in request.headers.get("accept", ""):
        return error_response(403, "csrf_failed", message)
    return PlainTextResponse(message, status_code=403)
