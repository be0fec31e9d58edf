"""The console parsers under property-based fuzzing (hypothesis): the CONNECT gateway's request
parser and the console websocket's handshake and frames, fed to a running dashboard.

Whatever arrives: no crash (nothing logged at ERROR, no 5xx from the gateway without a valid
ticket, never a tunnel without one), and afterwards the gateway and the console websocket
still serve a valid ticket.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.proxy.gateway import parse_target, ticket_from_authorization
from tests.proxy.conftest import ECHO, ConsoleWorld, TcpDisplay
from tests.proxy.spice_client import WebSocketStream, connect_through_gateway

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

HEADER_VALUE = st.binary(max_size=120).filter(lambda b: b"\r" not in b and b"\n" not in b)


@given(st.binary(max_size=300))
@FUZZ
def test_the_target_and_credentials_parsers_take_any_bytes(raw: bytes) -> None:
    target = parse_target(raw)
    if target is not None:
        assert 0 < target.port < 65536 and target.host
    ticket = ticket_from_authorization(raw)
    assert ticket is None or isinstance(ticket, str)


def _request_heads() -> st.SearchStrategy[bytes]:
    """CONNECT-like heads (the parser's interesting cases) and plain garbage."""
    method = st.sampled_from([b"CONNECT", b"GET", b"connect", b"PRI", b"", b"CONNECT\x00"])
    target = st.one_of(
        st.builds(lambda h, p: h + b":" + p, st.binary(max_size=40), st.binary(max_size=8)),
        st.sampled_from([b"127.0.0.1:1", b"[::1]:5900", b"[::1:5900", b"host:0", b"host:99999", b"*"]),
    )
    version = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/9.9", b"", b"HTTP/1.1 extra"])
    header = st.builds(lambda n, v: n + b": " + v, st.binary(min_size=1, max_size=30), HEADER_VALUE)
    credentials = st.builds(
        lambda s: b"Proxy-Authorization: Basic " + base64.b64encode(s), st.binary(max_size=90)
    )
    line_end = st.sampled_from([b"\r\n", b"\n", b"\r"])
    structured = st.builds(
        lambda m, t, v, hs, end: m + b" " + t + b" " + v + end + end.join(hs) + end + end,
        method,
        target,
        version,
        st.lists(st.one_of(header, credentials), max_size=6),
        line_end,
    )
    return st.one_of(structured, st.binary(max_size=2000))


def _send_head(gateway: tuple[str, int], head: bytes) -> bytes:
    with socket.create_connection(gateway, timeout=10) as sock:
        try:
            sock.sendall(head)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return b""  # the gateway hung up early: fine
        answer = b""
        try:
            while chunk := sock.recv(4096):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return answer


async def test_the_gateway_survives_any_request_head_and_never_tunnels_without_a_ticket(
    world: ConsoleWorld, display: TcpDisplay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)

    @given(_request_heads())
    @FUZZ
    def fuzz(head: bytes) -> None:
        answer = _send_head(world.gateway, head)
        if answer:
            status_line = answer.split(b"\r\n", 1)[0]
            assert status_line.startswith(b"HTTP/1.1 4"), status_line

    await asyncio.to_thread(fuzz)
    assert display.connections == 0, "no request without a ticket reached a display"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    # Still serving: a valid ticket opens its tunnel.
    issued = await world.ticket(port=display.port)
    answer, stream = await asyncio.to_thread(
        connect_through_gateway, world.gateway, f"127.0.0.1:{display.port}", ticket=issued.secret
    )
    try:
        assert answer.status == 200
        await asyncio.to_thread(stream.send, ECHO)
        assert await asyncio.to_thread(stream.recv_exact, 4) == ECHO
    finally:
        stream.close()


def _frames() -> st.SearchStrategy[bytes]:
    """Client frames: well-formed headers with odd opcodes/lengths/masks, and raw garbage."""
    frame = st.builds(
        lambda first, masked, length, mask, payload: (
            bytes([first])
            + (
                struct.pack("!B", (0x80 if masked else 0) | length)
                if length < 126
                else struct.pack("!BH", (0x80 if masked else 0) | 126, length)
            )
            + (mask if masked else b"")
            + payload
        ),
        st.integers(0, 255),
        st.booleans(),
        st.integers(0, 300),
        st.binary(min_size=4, max_size=4),
        st.binary(max_size=300),
    )
    return st.lists(st.one_of(frame, st.binary(max_size=200)), min_size=1, max_size=5).map(b"".join)


def _handshakes(world: ConsoleWorld) -> st.SearchStrategy[bytes]:
    host = world.dashboard.url.split("://", 1)[1].encode()
    key = base64.b64encode(b"0123456789abcdef")
    fields = {
        b"Host": st.sampled_from([host, b"", b"evil.example"]),
        b"Upgrade": st.sampled_from([b"websocket", b"WebSocket", b"h2c", b""]),
        b"Connection": st.sampled_from([b"Upgrade", b"keep-alive", b"upgrade, close"]),
        b"Sec-WebSocket-Key": st.one_of(st.just(key), HEADER_VALUE),
        b"Sec-WebSocket-Version": st.sampled_from([b"13", b"8", b"", b"13, 13"]),
        b"Origin": st.sampled_from([world.origin.encode(), b"null", b"http://evil.example"]),
        b"Sec-WebSocket-Protocol": st.sampled_from([b"binary", b"chat", b""]),
        b"Cookie": st.one_of(st.just(b"kvmvdi_console=garbage"), HEADER_VALUE),
    }
    path = st.sampled_from([b"/console/ws/1", b"/console/ws/x", b"/live", b"/console/ws/%00"])
    return st.builds(
        lambda p, values: (
            b"GET "
            + p
            + b" HTTP/1.1\r\n"
            + b"".join(name + b": " + value + b"\r\n" for name, value in values.items())
            + b"\r\n"
        ),
        path,
        st.fixed_dictionaries(fields),
    )


def _dashboard_address(world: ConsoleWorld) -> tuple[str, int]:
    host, port = world.dashboard.url.split("://", 1)[1].rsplit(":", 1)
    return host, int(port)


async def test_the_console_websocket_survives_any_handshake_and_any_frames(
    world: ConsoleWorld, display: TcpDisplay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    address = _dashboard_address(world)
    issued = await world.ticket(port=display.port)
    ws_path = world.ws_url().split("://", 1)[1].split("/", 1)[1]
    good_head = (
        f"GET /{ws_path} HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 13\r\n"
        f"Origin: {world.origin}\r\nSec-WebSocket-Protocol: binary\r\n"
        f"Cookie: kvmvdi_console={issued.secret}\r\n\r\n"
    ).encode()

    def exchange(head: bytes, after: bytes) -> bytes:
        with socket.create_connection(address, timeout=10) as sock:
            answer = b""
            try:
                sock.sendall(head)
                answer = sock.recv(4096)
                if after and answer.startswith(b"HTTP/1.1 101"):
                    sock.sendall(after)
                    sock.shutdown(socket.SHUT_WR)
                    while sock.recv(65536):
                        pass
            except (OSError, TimeoutError):
                pass
            return answer

    @given(_handshakes(world))
    @FUZZ
    def fuzz_handshake(head: bytes) -> None:
        answer = exchange(head, b"")
        assert not answer.startswith(b"HTTP/1.1 5"), answer[:200]

    @given(_frames())
    @FUZZ
    def fuzz_frames(frames: bytes) -> None:
        answer = exchange(good_head, frames)
        assert answer.startswith(b"HTTP/1.1 101"), answer[:200]

    await asyncio.to_thread(fuzz_handshake)
    await asyncio.to_thread(fuzz_frames)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    # Still serving: a fresh console websocket echoes through the display.
    fresh = await world.ticket(port=display.port)
    stream = await asyncio.to_thread(
        WebSocketStream.open, world.ws_url(), cookie=f"kvmvdi_console={fresh.secret}", origin=world.origin
    )
    try:
        await asyncio.to_thread(stream.send, ECHO + b"after fuzzing")
        assert await asyncio.to_thread(stream.recv_exact, 17) == ECHO + b"after fuzzing"
    finally:
        stream.close()
