"""The global request-body limit: ASGI middleware in front of every route.

- A ``Content-Length`` above ``max_body_bytes`` is answered 413 before anything is read.
- A body without a length (chunked) is counted as the application reads it; the
  read that passes the limit raises, and the answer is 413 at once: the rest is
  never read, nor buffered.
- The whole body must arrive within ``body_timeout`` seconds of the request's
  start (a client trickling its body a byte at a time gets 408).
- A client that leaves in the middle of its body is one log line, not an error.
- Every refusal closes the connection (``Connection: close``), and so does any
  answer given while the client was still sending a body the application did
  not read, so a trickling client cannot hold the connection open after it.

It sits outside the session and CSRF middleware, so their reads (the CSRF form
token) are bounded too. Answers are JSON in the error model for API paths and
JSON clients, plain text otherwise.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response
from app.i18n import gettext as _

log = logging.getLogger("kvmvdi.server")


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def refusal(scope: Scope, status: int, code: str, message: str) -> Response:
    request = Request(scope)
    headers = {"Connection": "close"}
    accept = request.headers.get("accept", "")
    if scope["path"].startswith("/api/") or "application/json" in accept:
        return error_response(status, code, message, fields={"body": message}, headers=headers)
    return PlainTextResponse(message, status, headers=headers)


def too_large(limit: int) -> _Refused:
    return _Refused(
        413, "body_too_large", _("The request body is larger than {limit} bytes.").format(limit=limit)
    )


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, body_timeout: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await refusal(scope, *_args(too_large(limit)))(scope, receive, send)
            return
        has_body = declared != 0 and (declared is not None or _chunked(scope))
        deadline = asyncio.get_running_loop().time() + self.body_timeout
        received = 0
        complete = not has_body
        started = False

        async def bounded_receive() -> Message:
            nonlocal received, complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise _Refused(
                    408,
                    "body_timeout",
                    _("The request body did not arrive within {body_timeout:g} s.").format(
                        body_timeout=self.body_timeout
                    ),
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large(limit)
                complete = not message.get("more_body", False)
            return message

        async def closing_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if not complete:
                    # The client is still sending: do not wait for the rest on this connection.
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, bounded_receive, closing_send)
        except ClientDisconnect:
            # The client left while sending its body: nobody to answer, nothing broke.
            log.info("client left during its request body: %s %s", scope["method"], scope["path"])
        except _Refused as exc:
            log.info("refused %s %s: %s", scope["method"], scope["path"], exc.message)
            if started:
                raise
            await refusal(scope, *_args(exc))(scope, receive, send)


def _args(exc: _Refused) -> tuple[int, str, str]:
    return exc.status, exc.code, exc.message


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _content_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _chunked(scope: Scope) -> bool:
    value = _header(scope, b"transfer-encoding")
    return value is not None and b"chunked" in value.lower()
