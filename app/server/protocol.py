"""uvicorn's HTTP protocol (httptools) with limits on the request head and a lingering close.

uvicorn times out idle keep-alive connections, but not a client that opens a
connection and sends its request line and headers a byte at a time (slowloris),
and httptools does not bound the size of a head. Here every request head must
arrive within ``header_timeout`` seconds of its first byte (or of the connection's
start) and within ``max_header_bytes``; otherwise the connection gets 408 or 431
and is closed. Bodies are bounded by :mod:`app.server.limits`.

Closing a connection while the client is still sending (a refused 10 MB body)
makes the kernel answer with a reset, and a reset can destroy the refusal before
the client reads it. So such a close *lingers*: the answer is flushed, the sending
side shut down, and whatever still arrives is discarded, not buffered, for at most
``LINGER_SECONDS`` or ``LINGER_BYTES``, before the socket is closed.

This subclass leans on uvicorn's internals (``transport``, the parser callbacks,
``handle_websocket_upgrade``); uvicorn is pinned for that reason.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.settings import ServerSettings

_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
_TOO_LARGE = b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
# Long enough for a busy client to read the refusal before the socket closes (nginx lingers up
# to 30 s); the bytes cap only stops a client that keeps streaming at full speed for that long.
LINGER_SECONDS = 5.0
LINGER_BYTES = 256 * 1024 * 1024


class _LingeringTransport:
    """The transport as uvicorn sees it: ``close()`` lingers while the client may still be sending."""

    def __init__(self, transport: asyncio.Transport, protocol: HeadLimitedProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def close(self) -> None:
        self._protocol.close_connection()

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._transport.is_closing()


class HeadLimitedProtocol(HttpToolsProtocol):
    header_timeout: float = 10.0
    max_header_bytes: int = 64 * 1024

    _raw_transport: asyncio.Transport | None = None
    _head_timer: asyncio.TimerHandle | None = None
    _reading_head = False
    # A byte of the next request arrived (else an idle connection is closed without an answer).
    _head_begun = False
    _head_bytes = 0
    # The current request's body was received to its end (nothing more is on its way).
    _message_complete = True
    lingering = False
    _linger_timer: asyncio.TimerHandle | None = None
    _discarded = 0

    # -- the request head --------------------------------------------------------------------

    def _start_head(self, *, begun: bool) -> None:
        self._reading_head = True
        self._head_begun = begun
        self._head_bytes = 0
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_too_slow)

    def _end_head(self) -> None:
        self._reading_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, answer: bytes | None) -> None:
        self._end_head()
        if not self.transport.is_closing():
            if answer is not None:
                self.transport.write(answer)
            self.transport.close()

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._reading_head:
            self._refuse(_TIMEOUT if self._head_begun else None)

    # -- closing -------------------------------------------------------------------------------

    def close_connection(self) -> None:
        raw = self._raw_transport
        if raw is None or raw.is_closing() or self.lingering:
            return
        if self._message_complete or not raw.can_write_eof():
            raw.close()
            return
        self.lingering = True
        self._end_head()
        raw.write_eof()
        raw.resume_reading()
        self._linger_timer = self.loop.call_later(LINGER_SECONDS, raw.close)

    # -- asyncio and parser callbacks --------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._raw_transport = transport
        super().connection_made(_LingeringTransport(transport, self))  # type: ignore[arg-type]
        self._start_head(begun=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_head()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            self._discarded += len(data)
            if self._discarded > LINGER_BYTES and self._raw_transport is not None:
                self._raw_transport.close()
            return
        super().data_received(data)
        if self._reading_head and self.parser is not None:
            # Still within the head after this read: all of it was head bytes.
            self._head_bytes += len(data)
            if self._head_bytes > self.max_header_bytes:
                self._refuse(_TOO_LARGE)

    def handle_websocket_upgrade(self) -> None:
        # The websocket protocol gets the socket's own transport.
        if self._raw_transport is not None:
            self.transport = self._raw_transport
        super().handle_websocket_upgrade()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._message_complete = False
        self._start_head(begun=True)

    def on_headers_complete(self) -> None:
        self._end_head()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._message_complete = True
        super().on_message_complete()


def http_protocol(settings: ServerSettings) -> type[HeadLimitedProtocol]:
    """The protocol class for uvicorn's ``http`` option, with the configured limits."""
    return type(
        "DashboardHttpProtocol",
        (HeadLimitedProtocol,),
        {"header_timeout": settings.header_timeout, "max_header_bytes": settings.max_header_bytes},
    )
