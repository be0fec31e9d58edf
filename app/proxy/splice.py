"""Zero-copy piping for the CONNECT gateway: bytes move socket -> pipe -> socket in the kernel.

After the CONNECT handshake the gateway only moves the client's bytes (a TLS
session between remote-viewer and qemu) in both directions. ``os.splice`` moves
them from one socket into a pipe and from the pipe into the other socket without
copying them through the process, driven by the event loop's readiness
callbacks (``add_reader`` / ``add_writer``, level-triggered).

Back-pressure is the pipe: each direction has one, of ``pipe_size`` bytes. While
it holds data the destination did not take (its socket buffer is full), the
source is not read at all (its reader is removed) until the destination is
writable again and the pipe drained; so one direction holds at most one pipe of
bytes, however slow the reader, and the sender is slowed by TCP itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Callable

from app.i18n import gettext as _

# F_SETPIPE_SZ (Linux 2.6.35): not named in Python's fcntl before 3.10 on every build.
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
SPLICE_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
DEFAULT_PIPE_SIZE = 1 << 20


def pipe_pair(size: int) -> tuple[int, int]:
    """A non-blocking pipe of (up to) ``size`` bytes; the kernel may cap it at pipe-max-size."""
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    with contextlib.suppress(OSError):
        fcntl.fcntl(write_end, F_SETPIPE_SZ, size)
    return read_end, write_end


async def open_socket(
    host: str,
    port: int,
    *,
    timeout: float,  # noqa: ASYNC109 -- the connect timeout, as in asyncio.open_connection's callers
) -> socket.socket:
    """A connected non-blocking TCP socket to ``host:port`` (every address tried in turn)."""
    loop = asyncio.get_running_loop()
    last: OSError | None = None
    async with asyncio.timeout(timeout):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        for family, kind, proto, _name, address in infos:
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, address)
            except OSError as exc:
                sock.close()
                last = exc
                continue
            except BaseException:
                sock.close()
                raise
            return sock
    raise last or OSError(f"no address for {host}")


class _Direction:
    """One way of a spliced connection: ``src`` socket -> pipe -> ``dst`` socket."""

    def __init__(
        self,
        owner: SplicedConnection,
        src: socket.socket,
        dst: socket.socket,
        size: int,
        *,
        from_display: bool,
    ) -> None:
        self.owner = owner
        # Reading from the display: its end is the display hanging up.
        self.from_display = from_display
        self.src = src.fileno()
        self.dst = dst.fileno()
        self.read_end, self.write_end = pipe_pair(size)
        self.size = size
        self.buffered = 0
        self.moved = 0
        self.reading = False
        self.waiting_writable = False

    def start(self) -> None:
        self._want_read(True)

    def _want_read(self, wanted: bool) -> None:
        if wanted == self.reading or self.owner.closed:
            return
        self.reading = wanted
        if wanted:
            self.owner.loop.add_reader(self.src, self.readable)
        else:
            self.owner.loop.remove_reader(self.src)

    def _want_write(self, wanted: bool) -> None:
        if wanted == self.waiting_writable or self.owner.closed:
            return
        self.waiting_writable = wanted
        if wanted:
            self.owner.loop.add_writer(self.dst, self.writable)
        else:
            self.owner.loop.remove_writer(self.dst)

    def readable(self) -> None:
        try:
            # A bounded batch, then back to the loop (level-triggered: it calls again).
            for _round in range(16):
                try:
                    count = os.splice(self.src, self.write_end, self.size, flags=SPLICE_FLAGS)
                except BlockingIOError:
                    # The socket is empty, or the pipe is full by slots (TCP fills pages
                    # partly): flush and try again only if the flush made room.
                    if self.buffered == 0 or not self.flush() or self.buffered:
                        return
                    continue
                except OSError:
                    count = 0  # reset by the source: as good as its end
                if count == 0:
                    self.owner.finish(hung_up=self.from_display)
                    return
                self.buffered += count
                self.moved += count
                self.owner.activity()
                if not self.flush():
                    return
        except OSError:
            self.owner.finish()

    def writable(self) -> None:
        try:
            if self.flush():
                self._want_write(False)
                self._want_read(True)
        except OSError:
            self.owner.finish()

    def flush(self) -> bool:
        """Move what the pipe holds to ``dst``; False when ``dst`` is full (reading paused)."""
        while self.buffered:
            try:
                count = os.splice(self.read_end, self.dst, self.buffered, flags=SPLICE_FLAGS)
            except BlockingIOError:
                self._want_read(False)
                self._want_write(True)
                return False
            if count == 0:
                raise ConnectionResetError(_("the destination closed"))
            self.buffered -= count
        return True

    def stop(self) -> None:
        loop = self.owner.loop
        if self.reading:
            loop.remove_reader(self.src)
            self.reading = False
        if self.waiting_writable:
            loop.remove_writer(self.dst)
            self.waiting_writable = False
        for fd in (self.read_end, self.write_end):
            with contextlib.suppress(OSError):
                os.close(fd)


class SplicedConnection:
    """A client socket and a display socket joined in the kernel, both ways.

    Quacks like a console channel for :class:`~app.proxy.sessions.ConsoleSessions`:
    ``bytes_to_client``, ``bytes_to_vm``, ``last_activity``, ``close(reason)``.
    """

    def __init__(
        self,
        client: socket.socket,
        upstream: socket.socket,
        *,
        on_finished: Callable[[SplicedConnection], None],
        pipe_size: int = DEFAULT_PIPE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.client = client
        self.upstream = upstream
        self.closed = False
        # The display's side ended the connection first.
        self.display_hung_up = False
        self._clock = clock
        self.last_activity = clock()
        self._on_finished = on_finished
        for sock in (client, upstream):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._to_vm = _Direction(self, client, upstream, pipe_size, from_display=False)
        self._to_client = _Direction(self, upstream, client, pipe_size, from_display=True)

    @property
    def bytes_to_vm(self) -> int:
        return self._to_vm.moved

    @property
    def bytes_to_client(self) -> int:
        return self._to_client.moved

    def buffered(self) -> int:
        """Bytes held in the two pipes (kernel memory, bounded by two pipe sizes)."""
        return self._to_vm.buffered + self._to_client.buffered

    def start(self) -> None:
        self._to_vm.start()
        self._to_client.start()

    def activity(self) -> None:
        self.last_activity = self._clock()

    def close(self, reason: object = None) -> None:
        """End the connection now (revoked ticket, timeout, shutdown)."""
        self.finish()

    def finish(self, *, hung_up: bool = False) -> None:
        if self.closed:
            return
        self.display_hung_up = hung_up
        self._to_vm.stop()
        self._to_client.stop()
        self.closed = True
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.close()
        self._on_finished(self)
