"""The "browser" and "native client" sides of the proxy benchmark: plain blocking sockets,
so the client costs little and sits in another process than the proxy it measures.

A :class:`Path` opens a byte pipe to the display: directly, through a TCP relay,
through an HTTP CONNECT gateway, or through a websocket bridge (RFC 6455 framing done
here: masked frames out, frame headers skipped in).
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

RECV_BUFFER = 4 << 20


def _read_head(sock: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError(f"closed during the handshake: {head!r}")
        head += chunk
    return head


@dataclass
class Path:
    """How to reach the display: ``kind`` is tcp, connect or ws."""

    name: str
    kind: str
    port: int
    target: str = ""
    ws_path: str = ""
    cookie: str = ""
    ticket: str = ""
    origin: str = ""
    negotiated_extensions: list[str] = field(default_factory=list)

    def open(self) -> Pipe:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.kind == "connect":
            token = base64.b64encode(f"ticket:{self.ticket}".encode()).decode()
            sock.sendall(
                f"CONNECT {self.target} HTTP/1.0\r\nHost: {self.target}\r\n"
                f"Proxy-Authorization: Basic {token}\r\n\r\n".encode()
            )
            head = _read_head(sock)
            if not head.startswith(b"HTTP/1.1 200 "):
                raise ConnectionError(f"{self.name}: CONNECT refused: {head!r}")
            return Pipe(sock, websocket=False)
        if self.kind == "ws":
            key = base64.b64encode(os.urandom(16)).decode()
            headers = [
                f"GET {self.ws_path} HTTP/1.1",
                f"Host: 127.0.0.1:{self.port}",
                "Upgrade: websocket",
                "Connection: Upgrade",
                f"Sec-WebSocket-Key: {key}",
                "Sec-WebSocket-Version: 13",
                "Sec-WebSocket-Protocol: binary",
                # Offered like a browser does; a console websocket must decline it.
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
                f"Origin: {self.origin or f'http://127.0.0.1:{self.port}'}",
            ]
            if self.cookie:
                headers.append(f"Cookie: {self.cookie}")
            sock.sendall(("\r\n".join(headers) + "\r\n\r\n").encode())
            head = _read_head(sock)
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                raise ConnectionError(f"{self.name}: websocket refused: {head!r}")
            self.negotiated_extensions = [
                line.split(b":", 1)[1].strip().decode()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-extensions:")
            ]
            return Pipe(sock, websocket=True)
        return Pipe(sock, websocket=False)


def _masked_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x82, 0x80 | length)
    elif length < 65536:
        head = struct.pack("!BBH", 0x82, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x82, 0x80 | 127, length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def _frame_header(data: bytes) -> tuple[int, int] | None:
    """(header length, payload length) of a server frame at the start of ``data``, if complete."""
    if len(data) < 2:
        return None
    if data[0] & 0x0F == 0x8:
        raise ConnectionError("the server closed the websocket")
    length = data[1] & 0x7F
    offset = 2
    if length == 126:
        if len(data) < 4:
            return None
        length, offset = int.from_bytes(data[2:4], "big"), 4
    elif length == 127:
        if len(data) < 10:
            return None
        length, offset = int.from_bytes(data[2:10], "big"), 10
    return offset, length


class Pipe:
    # One receive buffer for all pipes: the client reads one pipe at a time, and a
    # thousand idle pipes must not cost a buffer each.
    _view = memoryview(bytearray(RECV_BUFFER))

    def __init__(self, sock: socket.socket, *, websocket: bool) -> None:
        self.sock = sock
        self.websocket = websocket
        # Frame parser state, kept across calls: a read may stop in the middle of a frame.
        self._remaining = 0
        self._header = b""

    def send(self, payload: bytes) -> None:
        self.sock.sendall(_masked_frame(payload) if self.websocket else payload)

    def prepared(self, payload: bytes) -> bytes:
        """The bytes :meth:`send` would write (one mask for repeated use in latency loops)."""
        return _masked_frame(payload) if self.websocket else payload

    def receive(self, total: int) -> int:
        """Read until ``total`` payload bytes arrived; returns the payload byte count."""
        if not self.websocket:
            got = 0
            while got < total:
                n = self.sock.recv_into(self._view)
                if not n:
                    raise ConnectionError("closed")
                got += n
            return got
        got = 0
        remaining = self._remaining  # payload bytes left in the current frame
        header = self._header
        view = self._view
        while got < total:
            n = self.sock.recv_into(view)
            if not n:
                raise ConnectionError("closed")
            pos = 0
            while pos < n:
                if remaining:
                    take = min(remaining, n - pos)
                    remaining -= take
                    got += take
                    pos += take
                    continue
                candidate = header + bytes(view[pos : min(n, pos + 14)])
                parsed = _frame_header(candidate)
                if parsed is None:
                    header = candidate
                    pos = n
                    continue
                offset, remaining = parsed
                pos += offset - len(header)
                header = b""
        self._remaining, self._header = remaining, header
        return got

    def close(self) -> None:
        self.sock.close()


def start_stream(path: Path, warmup: int = 64 << 20) -> Pipe:
    """A pipe through ``path`` with the display streaming, past a warm-up of ``warmup`` bytes."""
    pipe = path.open()
    pipe.send(b"S")
    pipe.receive(warmup)
    return pipe


def round_trips(path: Path, count: int, size: int = 64, warmup: int = 200) -> list[float]:
    """Echo round trips of ``size``-byte messages through ``path``, in microseconds."""
    remaining = [warmup + count]

    def more() -> bool:
        remaining[0] -= 1
        return remaining[0] >= 0

    return round_trips_while(path, more, size=size, warmup=warmup)


def round_trips_while(
    path: Path, running: Callable[[], bool], size: int = 64, warmup: int = 200
) -> list[float]:
    """Echo round trips on one connection while ``running()`` says so (the first ``warmup`` not kept)."""
    pipe = path.open()
    try:
        pipe.send(b"E")
        message = pipe.prepared(b"m" * size)
        samples = []
        done = 0
        while running():
            started = time.perf_counter_ns()
            pipe.sock.sendall(message)
            pipe.receive(size)
            if done >= warmup:
                samples.append((time.perf_counter_ns() - started) / 1000)
            done += 1
        return samples
    finally:
        pipe.close()


def open_idle(path: Path, count: int) -> list[Pipe]:
    """``count`` connections through ``path``, each proven end to end with a one-byte echo."""
    pipes = []
    for _ in range(count):
        pipe = path.open()
        pipe.send(b"Ex")
        pipe.receive(1)
        pipes.append(pipe)
    return pipes
