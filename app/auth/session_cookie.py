"""The session cookie: one random id and nothing else, HttpOnly, SameSite=Lax, Secure behind https.

Every browser gets an id on its first page that needs one (the log-in form needs a
CSRF token). It means nothing until a log-in stores its SHA-256 in the sessions
table (:mod:`app.auth.sessions`); a log-in always replaces it with a fresh id (no
session fixation), a log-out with another. The CSRF token is derived from the id
with the dashboard's secret (HMAC-SHA256), so it is tied to this browser's
current id and needs no storage; a new id means a new token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from http.cookies import SimpleCookie

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE_NAME = "kvmvdi_session"
SCOPE_KEY = "kvmvdi.session_cookie"
_VALID = re.compile(r"[A-Za-z0-9_-]{32,64}")


def new_session_id() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def session_hash(session_id: str) -> str:
    """What the database stores instead of the session id."""
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionCookie:
    """This request's session id: the one the browser sent, or a new one to send back."""

    def __init__(self, sent: str | None, secret: bytes) -> None:
        self.sent = sent if sent is not None and _VALID.fullmatch(sent) else None
        self._secret = secret
        self._new: str | None = None

    @property
    def id(self) -> str:
        """The current id, made now if the browser has none yet."""
        if self._new is None and self.sent is None:
            self._new = new_session_id()
        return self._new or self.sent or ""

    @property
    def changed(self) -> bool:
        return self._new is not None

    def renew(self) -> str:
        """A fresh id for this browser (at log-in and log-out); the old one is forgotten."""
        self._new = new_session_id()
        return self._new

    def csrf_token(self) -> str:
        digest = hmac.new(self._secret, b"csrf:" + self.id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def session_cookie(conn: HTTPConnection) -> SessionCookie:
    cookie: SessionCookie = conn.scope[SCOPE_KEY]
    return cookie


def _sent_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # noqa: S112 -- a malformed cookie header is no session
                continue
            if COOKIE_NAME in jar:
                return jar[COOKIE_NAME].value
    return None


class SessionCookieMiddleware:
    def __init__(self, app: ASGIApp, *, secret: str, max_age: int, https: bool = False) -> None:
        self.app = app
        self.secret = secret.encode()
        self.max_age = max_age
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        cookie = SessionCookie(_sent_id(scope), self.secret)
        scope[SCOPE_KEY] = cookie
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start" and cookie.changed:
                flags = f"; Max-Age={self.max_age}; Path=/; HttpOnly; SameSite=Lax"
                if self.https:
                    flags += "; Secure"
                MutableHeaders(scope=message).append("Set-Cookie", f"{COOKIE_NAME}={cookie.id}{flags}")
            await send(message)

        await self.app(scope, receive, send_with_cookie)
