"""The console websocket: origin and ticket checks, close codes the page understands,
bounded memory with a slow browser, timeouts and one audit record per session."""

from __future__ import annotations

import asyncio
import socket
import tracemalloc
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.proxy.websocket import WebSocketChannel
from app.proxy.wsprotocol import DashboardWebSocketProtocol
from tests.dashboard import DashboardFactory
from tests.proxy.conftest import ECHO, HOLD, ConsoleWorld, TcpDisplay, make_world, pattern, stream_request
from tests.waiting import eventually


def open_console(
    world: ConsoleWorld,
    secret: str | None,
    *,
    vm_id: int | None = None,
    origin: str | None = "own",
    compression: str | None = None,
    sock: socket.socket | None = None,
    max_queue: int = 16,
) -> Any:
    headers = {"Cookie": f"kvmvdi_console={secret}"} if secret else {}
    return connect(
        world.ws_url(vm_id),
        additional_headers=headers,
        origin=world.origin if origin == "own" else origin,  # type: ignore[arg-type]
        subprotocols=["binary"],  # type: ignore[list-item]
        compression=compression,
        max_size=None,
        max_queue=max_queue,
        sock=sock,
    )


async def receive_exactly(ws: ClientConnection, size: int) -> bytes:
    data = b""
    while len(data) < size:
        message = await ws.recv()
        assert isinstance(message, bytes)
        data += message
    return data


async def close_code(ws: ClientConnection) -> tuple[int | None, str | None]:
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(30):
            while True:
                await ws.recv()
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason


async def audit(world: ConsoleWorld, action: str) -> list[dict[str, Any]]:
    # Session records are written as the last channel closes: let them land.
    return await eventually(
        lambda: world.dashboard.services.audit.recent(action=action), f"a {action} record"
    )


async def test_the_ticket_cookie_opens_a_binary_websocket_to_the_display(
    world: ConsoleWorld, display: TcpDisplay
) -> None:
    issued = await world.ticket(port=display.port)
    # The client offers permessage-deflate; a console websocket never takes it.
    async with open_console(world, issued.secret, compression="deflate") as ws:
        assert ws.subprotocol == "binary"
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        payload = ECHO + bytes(range(256)) * 1024
        await ws.send(payload)
        assert await receive_exactly(ws, len(payload)) == payload
    assert display.connections == 1


@pytest.mark.parametrize("origin", ["http://evil.example", None, "null"], ids=["foreign", "missing", "null"])
async def test_a_websocket_from_another_origin_is_refused_before_the_handshake(
    world: ConsoleWorld, display: TcpDisplay, origin: str | None
) -> None:
    issued = await world.ticket(port=display.port)
    with pytest.raises(InvalidStatus) as refused:
        async with open_console(world, issued.secret, origin=origin):
            pass
    assert refused.value.response.status_code == 403
    assert display.connections == 0


async def test_configured_extra_origins_may_open_consoles(
    dashboard_factory: DashboardFactory, display: TcpDisplay
) -> None:
    world = await make_world(
        await dashboard_factory(console={"allowed_origins": ["https://portal.example.org"]})
    )
    issued = await world.ticket(port=display.port)
    async with open_console(world, issued.secret, origin="https://portal.example.org") as ws:
        await ws.send(ECHO + b"ok")
        assert await receive_exactly(ws, 6) == ECHO + b"ok"


@pytest.mark.parametrize("cookie", [None, "not-a-ticket"], ids=["no-cookie", "unknown-ticket"])
async def test_without_a_valid_ticket_the_console_closes_with_4401(
    world: ConsoleWorld, display: TcpDisplay, cookie: str | None
) -> None:
    async with open_console(world, cookie) as ws:
        assert await close_code(ws) == (4401, "The console ticket is invalid or expired.")
    assert display.connections == 0


async def test_the_ticket_of_another_vm_closes_with_4403(world: ConsoleWorld, display: TcpDisplay) -> None:
    other = await world.ticket(vm_id=world.other_vm_id, port=display.port)
    async with open_console(world, other.secret, vm_id=world.vm_id) as ws:
        code, _ = await close_code(ws)
    assert code == 4403
    assert display.connections == 0


async def test_an_expired_ticket_closes_with_4401(world: ConsoleWorld, display: TcpDisplay) -> None:
    issued = await world.ticket(port=display.port)
    world.dashboard.clock.advance(world.dashboard.services.consoles.tickets.ttl + 1)
    async with open_console(world, issued.secret) as ws:
        code, _ = await close_code(ws)
    assert code == 4401
    assert display.connections == 0


async def test_an_unreachable_display_closes_with_4502(world: ConsoleWorld) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    issued = await world.ticket(port=port)
    async with open_console(world, issued.secret) as ws:
        code, _ = await close_code(ws)
    assert code == 4502


async def test_stopping_the_vm_closes_its_open_console_with_4404_and_revokes_the_ticket(
    world: ConsoleWorld, display: TcpDisplay
) -> None:
    issued = await world.ticket(port=display.port)
    async with open_console(world, issued.secret) as ws:
        await ws.send(ECHO + b"hi")
        assert await receive_exactly(ws, 6) == ECHO + b"hi"
        assert await world.dashboard.services.consoles.revoke_for_vm(world.vm_id, "vm_stopped") == 1
        assert await close_code(ws) == (4404, "The desktop was stopped.")
    async with open_console(world, issued.secret) as ws:
        code, _ = await close_code(ws)
    assert code == 4401
    records = await audit(world, "console.session")
    assert records[0]["details"]["end_reason"] == "vm_stopped"


async def test_an_admin_ending_a_users_sessions_closes_their_consoles_with_4410(
    world: ConsoleWorld, display: TcpDisplay
) -> None:
    issued = await world.ticket(port=display.port)
    async with open_console(world, issued.secret) as ws:
        await ws.send(ECHO + b"hi")
        await receive_exactly(ws, 6)
        assert await world.dashboard.services.consoles.revoke_for_user(world.user_id, "session_ended") == 1
        code, _ = await close_code(ws)
    assert code == 4410


async def test_the_channels_of_one_console_are_one_audited_session(
    world: ConsoleWorld, display: TcpDisplay
) -> None:
    issued = await world.ticket(port=display.port)
    async with open_console(world, issued.secret) as first, open_console(world, issued.secret) as second:
        await first.send(ECHO + b"a" * 1000)
        await second.send(ECHO + b"b" * 3000)
        await receive_exactly(first, 1004)
        await receive_exactly(second, 3004)
        assert len(world.dashboard.services.consoles.sessions.sessions()) == 1
    records = await audit(world, "console.session")
    assert len(records) == 1
    details = records[0]["details"]
    assert (details["via"], details["channels"]) == ("websocket", 2)
    assert details["bytes_to_vm"] == details["bytes_to_client"] == 4008
    assert records[0]["actor"] == "alice"
    assert records[0]["target"] == "desk-1"


async def test_an_idle_console_is_closed_with_4408(
    dashboard_factory: DashboardFactory, display: TcpDisplay
) -> None:
    world = await make_world(await dashboard_factory(console={"idle_timeout": 1}))
    issued = await world.ticket(port=display.port)
    async with open_console(world, issued.secret) as ws:
        await ws.send(ECHO + b"x")
        await receive_exactly(ws, 5)
        code, _ = await close_code(ws)
    assert code == 4408
    records = await audit(world, "console.session")
    assert records[0]["details"]["end_reason"] == "idle_timeout"


async def test_a_console_past_its_maximum_length_is_closed_with_4409_even_when_busy(
    dashboard_factory: DashboardFactory, display: TcpDisplay
) -> None:
    world = await make_world(await dashboard_factory(console={"max_session": 1}))
    issued = await world.ticket(port=display.port)
    async with open_console(world, issued.secret) as ws:

        async def keep_busy() -> None:
            while True:
                await ws.send(ECHO + b"x")
                # A busy client's pace, not a wait: the session's own max_session timer is under test.
                await asyncio.sleep(0.1)

        busy = asyncio.create_task(keep_busy())
        try:
            code, _ = await close_code(ws)
        finally:
            busy.cancel()
            await asyncio.gather(busy, return_exceptions=True)
    assert code == 4409


def console_channel(world: ConsoleWorld) -> WebSocketChannel:
    (session,) = world.dashboard.services.consoles.sessions.sessions()
    (channel,) = session.channels
    assert isinstance(channel, WebSocketChannel)
    return channel


def websocket_write_buffers(world: ConsoleWorld) -> int:
    connections = world.dashboard.server.server_state.connections
    return sum(
        c.transport.get_write_buffer_size()
        for c in connections
        if isinstance(c, DashboardWebSocketProtocol) and not c.transport.is_closing()
    )


async def wait_until_stalled(display: TcpDisplay) -> int:
    """The display's byte count once it stopped moving (the slow reader holds everything up)."""
    last, still = -1, 0
    while still < 10:
        # Standing still is seen over time: ten looks 0.1 s apart without a byte moving.
        await asyncio.sleep(0.1)
        still = still + 1 if display.streamed == last else 0
        last = display.streamed
    return last


async def test_a_browser_that_stops_reading_slows_the_display_and_the_proxy_holds_bounded_memory(
    world: ConsoleWorld, display: TcpDisplay
) -> None:
    settings = world.dashboard.settings.console
    total = 256 * 1024 * 1024
    # A small receive buffer on the "browser" socket, and a client that holds one message at most.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.connect(("127.0.0.1", world.dashboard.settings.server.port))
    issued = await world.ticket(port=display.port)
    tracemalloc.start()
    try:
        async with open_console(world, issued.secret, sock=sock, max_queue=1) as ws:
            await ws.send(stream_request(total))
            baseline = tracemalloc.get_traced_memory()[0]
            stalled_at = await wait_until_stalled(display)
            grown = tracemalloc.get_traced_memory()[0] - baseline
            channel = console_channel(world)
            held = channel.buffered() + websocket_write_buffers(world)
            tracemalloc.stop()

            # The display is held up far below what it wants to send ...
            assert stalled_at < total // 2
            # ... while the proxy keeps at most its queue limit, one read and a transport's high-water mark.
            bound = settings.buffer_limit + 2 * settings.read_size + 1024 * 1024
            assert held <= bound
            assert grown <= 2 * bound

            # Reading again drains everything, byte-exact and in order.
            offset = 0
            while offset < total:
                message = await ws.recv()
                assert isinstance(message, bytes)
                assert message == pattern(offset, len(message))
                offset += len(message)
            assert offset == total == display.streamed
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()


async def test_a_display_that_stops_reading_slows_the_browser_and_the_proxy_holds_bounded_memory(
    world: ConsoleWorld, display: TcpDisplay
) -> None:
    """The other direction: a stalled display makes the proxy stop reading the browser's socket."""
    settings = world.dashboard.settings.console
    total = 256 * 1024 * 1024
    message = 64 * 1024
    issued = await world.ticket(port=display.port)
    async with open_console(world, issued.secret) as ws:
        await ws.send(HOLD)
        sent = 0

        async def upload() -> None:
            nonlocal sent
            while sent < total:
                await ws.send(pattern(sent, message))
                sent += message

        uploading = asyncio.create_task(upload())
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            last, still = -1, 0
            while still < 10:
                # Standing still is seen over time: ten looks 0.1 s apart without a byte sent.
                await asyncio.sleep(0.1)
                still = still + 1 if sent == last else 0
                last = sent
            grown = tracemalloc.get_traced_memory()[0] - baseline
        finally:
            tracemalloc.stop()
        held = console_channel(world).buffered()

        # The browser is held up far below what it wants to send ...
        assert sent < total // 2
        assert not uploading.done()
        # ... while the proxy holds at most the display socket's high-water mark and one message.
        bound = settings.buffer_limit + settings.read_size + 1024 * 1024
        assert held <= bound
        assert grown <= 2 * bound

        # The display reads again: everything arrives, byte-exact and in order.
        display.release.set()
        await asyncio.wait_for(uploading, timeout=120)
        await eventually(lambda: display.received >= total, "every byte at the display", timeout=120)
        assert display.received == total
        assert display.received_intact
