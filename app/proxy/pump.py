"""Moving console bytes: socket ends with bounded buffers and back-pressure.

Both gateways are built from :class:`SocketEnd`, an ``asyncio.BufferedProtocol``
that reads up to ``console.read_size`` bytes at once into one receive buffer
shared by every proxied socket of the process (safe: the loop fills it and
``buffer_updated`` copies the bytes out before anything else runs), and hands
each chunk to a sink. Back-pressure is transport flow control: when the socket
a chunk is written to has more than its high-water mark buffered, the socket it
came from stops reading until the other drains. So per direction the proxy
holds at most one high-water mark plus one read, however slow the reader is,
and a slow browser slows the VM's stream instead of growing memory.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Callable
from typing import cast

DataSink = Callable[[bytes], None]
WritableHook = Callable[[bool], None]
ClosedHook = Callable[[Exception | None], None]


class ReadBuffer:
    """The receive buffer shared by the proxied sockets of one event loop."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.view = memoryview(bytearray(size))


class SocketEnd(asyncio.BufferedProtocol):
    """One TCP socket of a proxied connection (the client's or the display's).

    Until :meth:`attach` gives it a sink it does not read, so no byte can arrive
    before someone is ready to take it.
    """

    def __init__(self, read_buffer: ReadBuffer, *, write_high_water: int) -> None:
        self._read_buffer = read_buffer
        self._high_water = write_high_water
        self.transport: asyncio.Transport | None = None
        self.sink: DataSink | None = None
        self.on_writable: WritableHook | None = None
        self.on_closed: ClosedHook | None = None
        self.writable = True
        self.closed = False
        self._reading = True
        self._drain_waiters: list[asyncio.Future[None]] = []

    # -- asyncio protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        sock = self.transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # SPICE input and cursor messages are tiny and latency-bound.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The low-water mark decides when a paused peer reads again: a quarter keeps the pipe full.
        self.transport.set_write_buffer_limits(high=self._high_water, low=self._high_water // 4)
        if self.sink is None:
            self._reading = False
            self.transport.pause_reading()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_buffer.view

    def buffer_updated(self, nbytes: int) -> None:
        data = bytes(self._read_buffer.view[:nbytes])
        if self.sink is not None:
            self.sink(data)

    def eof_received(self) -> bool:
        # SPICE never half-closes: the end of one direction ends the connection.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.writable = True
        self._wake_drain_waiters()
        if self.on_closed is not None:
            self.on_closed(exc)

    def pause_writing(self) -> None:
        self.writable = False
        if self.on_writable is not None:
            self.on_writable(False)

    def resume_writing(self) -> None:
        self.writable = True
        self._wake_drain_waiters()
        if self.on_writable is not None:
            self.on_writable(True)

    # -- use ------------------------------------------------------------------------------

    def attach(
        self,
        sink: DataSink,
        *,
        on_writable: WritableHook | None = None,
        on_closed: ClosedHook | None = None,
    ) -> None:
        self.sink = sink
        self.on_writable = on_writable
        self.on_closed = on_closed
        if self.closed and on_closed is not None:
            on_closed(None)
            return
        self.set_reading(True)

    def set_reading(self, reading: bool) -> None:
        if self.transport is None or self.closed or reading == self._reading:
            return
        self._reading = reading
        if reading:
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()

    @property
    def reading(self) -> bool:
        return self._reading

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def buffered(self) -> int:
        """Bytes waiting in this socket's write buffer."""
        if self.transport is None or self.closed:
            return 0
        return self.transport.get_write_buffer_size()

    async def drained(self) -> None:
        """Return once the write buffer is below its low-water mark (or the socket closed)."""
        if self.writable or self.closed:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def close(self) -> None:
        """Close after sending what is buffered."""
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        """Close at once, dropping what is buffered."""
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def _wake_drain_waiters(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


async def connect(
    host: str,
    port: int,
    *,
    read_buffer: ReadBuffer,
    write_high_water: int,
    connect_timeout: float,
    tls: ssl.SSLContext | None = None,
) -> SocketEnd:
    """Open a TCP connection to a SPICE display, over TLS with ``tls`` (its certificate checked
    for ``host``); ``OSError`` / ``TimeoutError`` / ``ssl.SSLError`` when it fails."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(connect_timeout):
        _, end = await loop.create_connection(
            lambda: SocketEnd(read_buffer, write_high_water=write_high_water),
            host,
            port,
            ssl=tls,
            server_hostname=host.strip("[]") if tls is not None else None,
        )
    return end


class SocketPipe:
    """Two socket ends joined both ways, e.g. a CONNECT client and a SPICE display.

    Entirely callback-driven: no task, no queue; each chunk goes straight to the
    other socket's transport and flow control pauses the side that reads faster.
    """

    def __init__(
        self,
        client: SocketEnd,
        upstream: SocketEnd,
        *,
        on_finished: Callable[[SocketPipe], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.upstream = upstream
        self.bytes_to_client = 0
        self.bytes_to_vm = 0
        self._clock = clock
        self.last_activity = clock()
        self._on_finished = on_finished
        self._finished = False

    def start(self, pending: bytes = b"") -> None:
        if pending:
            self._to_vm(pending)
        self.client.attach(self._to_vm, on_writable=self.upstream.set_reading, on_closed=self._client_closed)
        self.upstream.attach(
            self._to_client, on_writable=self.client.set_reading, on_closed=self._upstream_closed
        )

    def buffered(self) -> int:
        """Bytes this pipe holds in user space right now (both transports' write buffers)."""
        return self.client.buffered() + self.upstream.buffered()

    def abort(self) -> None:
        self.client.abort()
        self.upstream.abort()

    def close(self, reason: object) -> None:
        """End the connection now (revoked ticket, timeout, shutdown)."""
        self.abort()

    def _to_vm(self, data: bytes) -> None:
        self.bytes_to_vm += len(data)
        self.last_activity = self._clock()
        self.upstream.write(data)

    def _to_client(self, data: bytes) -> None:
        self.bytes_to_client += len(data)
        self.last_activity = self._clock()
        self.client.write(data)

    def _client_closed(self, exc: Exception | None) -> None:
        self.upstream.close()
        self._maybe_finished()

    def _upstream_closed(self, exc: Exception | None) -> None:
        self.client.close()
        self._maybe_finished()

    def _maybe_finished(self) -> None:
        if self.client.closed and self.upstream.closed and not self._finished:
            self._finished = True
            self._on_finished(self)
