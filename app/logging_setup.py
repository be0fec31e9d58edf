"""Logs an operator can read: one line per event, a request id on every line of a request.

``configure_logging(settings)`` (called once by the command line, before the
dashboard starts) sends every record to standard error, as text or as one JSON
object per line (``log_format``). The dashboard's own loggers (``kvmvdi.*``,
``uvicorn.error``) log at ``log_level``; libraries that narrate their routine
work (asyncssh logs every SSH channel's open, exit status and close with the
full remote command line; uvicorn logs every request; libvirt, websockets and
the database drivers their internals) log at ``library_log_level``, WARNING
unless asked otherwise.

:class:`RequestIdMiddleware` gives every HTTP request and websocket an id: the
proxy's ``X-Request-ID`` when it is a plain token, else a fresh one. The id is
kept in a context variable, so every line logged while the request runs
(including tasks it starts) carries it; responses and websocket handshakes
return it as ``X-Request-ID``.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.escaping import escape_controls

if TYPE_CHECKING:
    from app.settings import Settings

REQUEST_ID: ContextVar[str] = ContextVar("kvmvdi_request_id", default="-")
REQUEST_ID_HEADER = "X-Request-ID"
# An id from a proxy is kept only if it is a short plain token: nothing can be smuggled into a log line.
_INCOMING_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

# Loggers of libraries that narrate routine work at INFO or DEBUG.
LIBRARY_LOGGERS = (
    "asyncssh",
    "uvicorn.access",
    "libvirt",
    "websockets",
    "databases",
    "aiosqlite",
    "aiomysql",
    "alembic",
    "httpx",
    "httpcore",
    "ldap3",
    "multipart",
    "PIL",
    "asyncio",
)
# Ours, at log_level.
APP_LOGGERS = ("kvmvdi", "uvicorn", "uvicorn.error")

access_log = logging.getLogger("kvmvdi.http")


def new_request_id() -> str:
    return secrets.token_hex(8)


def current_request_id() -> str:
    return REQUEST_ID.get()


class RequestIdFilter(logging.Filter):
    """Puts the current request id on every record (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


class TextFormatter(logging.Formatter):
    """``2026-12-04 15:02:49,123 INFO kvmvdi.audit [req 3f2a...] message`` on one line.

    Line breaks and every other control character inside a message are escaped
    (:func:`app.escaping.escape_controls`), so one event stays one line and a typed
    name cannot move a terminal's cursor; a traceback follows its line, as Python
    prints it.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, request_id, message[, exception]."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", REQUEST_ID.get()),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def make_handler(log_format: str, stream: IO[str] | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    return handler


def configure_logging(settings: Settings, stream: IO[str] | None = None) -> logging.Handler:
    """Replace the root logger's handlers with ours; set our and the libraries' levels. The handler."""
    level = settings.log_level.upper()
    library_level = settings.library_log_level.upper()
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler = make_handler(settings.log_format, stream)
    root.addHandler(handler)
    # The root passes everything through to the handler; each logger below decides its level.
    root.setLevel(library_level)
    for names, logger_level in ((LIBRARY_LOGGERS, library_level), (APP_LOGGERS, level)):
        for name in names:
            logger = logging.getLogger(name)
            logger.setLevel(logger_level)
            # Handlers a library (uvicorn's default configuration) added: ours, the root's, are enough.
            logger.handlers.clear()
            logger.propagate = True
    access_log.setLevel(logging.INFO if settings.access_log else logging.WARNING)
    logging.captureWarnings(True)
    return handler


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _INCOMING_ID.fullmatch(text) else None
    return None


class RequestIdMiddleware:
    """Sets the request id for the request's duration; answers it; logs the request when asked to."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope) or new_request_id()
        token = REQUEST_ID.set(request_id)
        status = 0
        started = time.monotonic()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            elif message["type"] == "websocket.accept":
                status = 101
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())],
                }
            elif message["type"] == "websocket.close" and not status:
                status = 403
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if access_log.isEnabledFor(logging.INFO):
                # The path only: a query string is the client's business.
                method = scope.get("method", "WS")
                access_log.info(
                    "%s %s %s %.1f ms", method, scope.get("path", ""), status or "-",
                    (time.monotonic() - started) * 1000,
                )  # fmt: skip
            REQUEST_ID.reset(token)
