"""A SPICE client's main-channel log-in over any byte stream: plain TCP, the CONNECT gateway
or the console websocket, so tests can prove a password works (or not) through each path.

The link handshake (spice-protocol ``protocol.h``): the client sends ``REDQ`` v2.2 and a
``SpiceLinkMess`` for the main channel; the server answers with its 1024-bit RSA key;
the client picks the SPICE ticket mechanism and sends the password plus NUL encrypted
with RSA-OAEP(SHA-1); the server answers a 32-bit result (0 OK, 7 permission denied)
and, on success, its first main-channel message, ``SPICE_MSG_MAIN_INIT`` (103).
"""

from __future__ import annotations

import base64
import contextlib
import socket
import ssl
import struct
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect
from websockets.typing import Origin, Subprotocol

MAGIC = b"REDQ"
CHANNEL_MAIN = 1
CAPS = (1 << 0) | (1 << 1) | (1 << 3)  # AUTH_SELECTION, AUTH_SPICE, MINI_HEADER
AUTH_SELECTION = 1 << 0
AUTH_MECHANISM_SPICE = 1
PUBKEY_BYTES = 162
LINK_OK = 0
LINK_PERMISSION_DENIED = 7
MSG_MAIN_INIT = 103


class ByteStream(Protocol):
    def send(self, data: bytes) -> None: ...

    def recv_exact(self, size: int) -> bytes: ...

    def close(self) -> None: ...


class StreamClosed(Exception):
    pass


class TcpStream:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    def open(
        cls, host: str, port: int, *, timeout: float = 10, tls: ssl.SSLContext | None = None
    ) -> TcpStream:
        """A connection to ``host:port``; with ``tls``, TLS checked for ``host`` (SPICE's TLS port)."""
        sock = socket.create_connection((host, port), timeout=timeout)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=host)
        return cls(sock)

    def start_tls(self, tls: ssl.SSLContext, host: str) -> TcpStream:
        """TLS over this connection (through the CONNECT gateway: client and display talk TLS)."""
        return TcpStream(tls.wrap_socket(self.sock, server_hostname=host))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_exact(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise StreamClosed(f"closed after {len(data)} of {size} bytes")
            data += chunk
        return data

    def read_until_closed(self, *, timeout: float) -> None:
        """Read in big chunks until the other end closes; a silence of ``timeout`` s raises
        TimeoutError. (SPICE sends some hundred kB right after a link: byte by byte, draining
        that alone takes half a minute.)"""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except (ConnectionError, ssl.SSLEOFError):
            pass

    def close(self) -> None:
        self.sock.close()


@dataclass(frozen=True)
class ConnectAnswer:
    status: int
    head: bytes


def connect_through_gateway(
    gateway: tuple[str, int], target: str, *, ticket: str | None, timeout: float = 10
) -> tuple[ConnectAnswer, TcpStream]:
    """Send ``CONNECT target`` (with the ticket as Basic credentials) and read the answer's head."""
    sock = socket.create_connection(gateway, timeout=timeout)
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    if ticket is not None:
        token = base64.b64encode(f"ticket:{ticket}".encode()).decode()
        lines.append(f"Proxy-Authorization: Basic {token}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            break
        head += chunk
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return ConnectAnswer(status, head), TcpStream(sock)


class WebSocketStream:
    """A console websocket seen as a byte stream (binary messages in, binary messages out)."""

    def __init__(self, conn: ClientConnection, stack: contextlib.ExitStack) -> None:
        self.conn = conn
        self._stack = stack
        self._buffer = b""

    @classmethod
    def open(cls, url: str, *, cookie: str, origin: str, timeout: float = 10) -> WebSocketStream:
        stack = contextlib.ExitStack()
        conn = stack.enter_context(
            ws_connect(
                url,
                additional_headers={"Cookie": cookie},
                origin=Origin(origin),
                subprotocols=[Subprotocol("binary")],
                compression=None,
                max_size=None,
                open_timeout=timeout,
            )
        )
        return cls(conn, stack)

    def send(self, data: bytes) -> None:
        self.conn.send(data)

    def recv_exact(self, size: int) -> bytes:
        while len(self._buffer) < size:
            try:
                message = self.conn.recv(timeout=10)
            except Exception as exc:
                raise StreamClosed(str(exc)) from exc
            assert isinstance(message, bytes), "the console websocket carries binary messages only"
            self._buffer += message
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def close(self) -> None:
        self._stack.close()


@dataclass(frozen=True)
class LinkResult:
    result: int
    first_message: int | None = None
    # The size of the first message's body, left unread in the stream.
    first_size: int = 0

    @property
    def ok(self) -> bool:
        return self.result == LINK_OK and self.first_message == MSG_MAIN_INIT


def spice_login_tls(host: str, port: int, password: str, tls: ssl.SSLContext) -> int:
    """A main-channel log-in on the display's TLS port; the link result (0 = OK)."""
    stream = TcpStream.open(host, port, tls=tls)
    try:
        return spice_link(stream, password).result
    finally:
        stream.close()


def spice_link(stream: ByteStream, password: str) -> LinkResult:
    """Log in to the main channel; on success also read the first message's type."""
    mess = struct.pack("<IBBIII", 0, CHANNEL_MAIN, 0, 1, 0, 18) + struct.pack("<I", CAPS)
    stream.send(MAGIC + struct.pack("<III", 2, 2, len(mess)) + mess)
    magic, major, _minor, size = struct.unpack("<4sIII", stream.recv_exact(16))
    if magic != MAGIC or major != 2:
        raise AssertionError(f"not a SPICE server: {magic!r} v{major}")
    reply = stream.recv_exact(size)
    (error,) = struct.unpack_from("<I", reply, 0)
    if error != LINK_OK:
        return LinkResult(int(error))
    num_common, _num_channel, caps_offset = struct.unpack_from("<III", reply, 4 + PUBKEY_BYTES)
    server_caps = struct.unpack_from("<I", reply, caps_offset)[0] if num_common else 0
    if server_caps & AUTH_SELECTION:
        stream.send(struct.pack("<I", AUTH_MECHANISM_SPICE))
    key = serialization.load_der_public_key(reply[4 : 4 + PUBKEY_BYTES])
    assert isinstance(key, rsa.RSAPublicKey)
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)  # noqa: S303
    stream.send(key.encrypt(password.encode() + b"\0", oaep))
    (result,) = struct.unpack("<I", stream.recv_exact(4))
    if result != LINK_OK:
        return LinkResult(int(result))
    # Mini header: u16 type, u32 size.
    message_type, size = struct.unpack("<HI", stream.recv_exact(6))
    return LinkResult(int(result), int(message_type), int(size))
