"""Every request and websocket runs in the language chosen for it (see :mod:`.negotiation`)."""

from __future__ import annotations

from http.cookies import SimpleCookie

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.i18n.catalogues import available_languages
from app.i18n.context import current_language, use_language
from app.i18n.negotiation import LANGUAGE_COOKIE, choose_language


def request_language(headers: Headers) -> str:
    cookie = SimpleCookie()
    try:
        cookie.load(headers.get("cookie", ""))
    except Exception:
        cookie = SimpleCookie()
    chosen = cookie[LANGUAGE_COOKIE].value if LANGUAGE_COOKIE in cookie else None
    return choose_language(
        chosen=chosen,
        accept_language=headers.get("accept-language", "")[:1024],
        default=current_language(),
        available=available_languages(),
    )


class LanguageMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        language = request_language(Headers(scope=scope))

        async def send_with_language(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Language", language)
                headers.add_vary_header("Accept-Language")
                headers.add_vary_header("Cookie")
            await send(message)

        with use_language(language):
            await self.app(scope, receive, send_with_language)
