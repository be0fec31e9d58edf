"""The HTTP CONNECT gateway: only a valid console ticket opens a tunnel, and only to its display."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from app.proxy.gateway import ESTABLISHED
from tests.dashboard import DashboardFactory
from tests.proxy.conftest import ECHO, ConsoleWorld, TcpDisplay, make_world, pattern, stream_request
from tests.proxy.spice_client import connect_through_gateway
from tests.proxy.test_websocket import wait_until_stalled
from tests.services.mariadb import MariaDB
from tests.waiting import eventually


async def connect(world: ConsoleWorld, target: str, ticket: str | None) -> tuple[int, bytes, socket.socket]:
    answer, stream = await asyncio.to_thread(connect_through_gateway, world.gateway, target, ticket=ticket)
    return answer.status, answer.head, stream.sock


async def exchange(sock: socket.socket, data: bytes) -> bytes:
    def run() -> bytes:
        sock.sendall(data)
        got = b""
        while len(got) < len(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return got

    return await asyncio.to_thread(run)


async def wait_closed(sock: socket.socket) -> bytes:
    def run() -> bytes:
        sock.settimeout(10)
        return sock.recv(1)

    return await asyncio.to_thread(run)


async def audit(world: ConsoleWorld, action: str) -> list[dict[str, Any]]:
    # Session records are written as the last channel closes: let them land.
    return await eventually(
        lambda: world.dashboard.services.audit.recent(action=action), f"a {action} record"
    )


async def test_a_ticket_opens_a_tunnel_to_its_display_and_bytes_flow_both_ways(
    world: ConsoleWorld, display: TcpDisplay
) -> None:
    issued = await world.ticket(port=display.port)
    status, head, sock = await connect(world, f"127.0.0.1:{display.port}", issued.secret)
    with sock:
        assert head == ESTABLISHED
        assert status == 200
        payload = ECHO + bytes(range(256)) * 512
        assert await exchange(sock, payload) == payload
    assert display.connections == 1


async def test_missing_credentials_get_407_with_a_basic_challenge(
    world: ConsoleWorld, display: TcpDisplay
) -> None:
    status, head, sock = await connect(world, f"127.0.0.1:{display.port}", None)
    sock.close()
    assert status == 407
    assert b'Proxy-Authenticate: Basic realm="KVM-VDI console"' in head
    assert display.connections == 0


async def test_a_forged_ticket_gets_407_and_is_audited_without_the_secret(
    world: ConsoleWorld, display: TcpDisplay
) -> None:
    forged = "f" * 43
    status, head, sock = await connect(world, f"127.0.0.1:{display.port}", forged)
    sock.close()
    assert status == 407
    assert b"Proxy-Authenticate" in head
    assert display.connections == 0
    records = await audit(world, "console.ticket_refused")
    assert [(r["details"]["via"], r["client_address"]) for r in records] == [("gateway", "127.0.0.1")]
    assert forged not in repr(records)


async def test_garbage_tickets_are_audited_at_a_bounded_rate_with_counts(
    world: ConsoleWorld, display: TcpDisplay
) -> None:
    """A flood of made-up tickets writes one record, then one summary with the count per window."""
    for attempt in range(40):
        status, _, sock = await connect(world, f"127.0.0.1:{display.port}", f"garbage-{attempt}")
        sock.close()
        assert status == 407
    assert len(await audit(world, "console.ticket_refused")) == 1
    await world.dashboard.services.consoles.denials.flush(everything=True)
    records = await world.dashboard.services.audit.recent(action="console.ticket_refused")
    assert len(records) == 2
    summary = records[0]["details"]
    assert summary["suppressed"] == 39 and summary["reason"] == "repeated"
    # Still a gateway: a valid ticket opens its tunnel.
    issued = await world.ticket(port=display.port)
    status, _, sock = await connect(world, f"127.0.0.1:{display.port}", issued.secret)
    sock.close()
    assert status == 200


async def test_unauthenticated_requests_in_progress_are_capped_per_address(
    world: ConsoleWorld, display: TcpDisplay
) -> None:
    """Connections that send no request head hold a slot each until their header timeout: one
    address gets a bounded number of them, and is refused at once beyond it."""
    gateway = world.dashboard.services.consoles.gateway
    assert gateway is not None
    limit = world.dashboard.settings.gateway.max_pending_per_address
    idle = [socket.create_connection(world.gateway, timeout=10) for _ in range(limit)]
    try:
        await eventually(lambda: gateway.pending_from("127.0.0.1") == limit, f"{limit} connections pending")
        extra = socket.create_connection(world.gateway, timeout=10)
        with extra:
            assert await wait_closed(extra) == b"", "refused at once"
    finally:
        for sock in idle:
            sock.close()
    await eventually(lambda: gateway.pending_from("127.0.0.1") == 0, "no connection pending")
    issued = await world.ticket(port=display.port)
    status, _, sock = await connect(world, f"127.0.0.1:{display.port}", issued.secret)
    sock.close()
    assert status == 200


@pytest.mark.parametrize("target_kind", ["ssh", "mariadb", "other_port", "other_host_name", "other_vm"])
async def test_a_ticket_reaches_nothing_but_its_own_display(
    world: ConsoleWorld, display: TcpDisplay, mariadb: MariaDB, target_kind: str
) -> None:
    """Another VM's display, the SSH port, the database port, another port or host name: all 403."""
    other_display = await TcpDisplay().start()
    try:
        issued = await world.ticket(port=display.port)
        targets = {
            "ssh": "127.0.0.1:22",
            "mariadb": f"127.0.0.1:{mariadb.port}",
            "other_port": f"127.0.0.1:{display.port + 1}",
            "other_host_name": f"localhost:{display.port}",
            "other_vm": f"127.0.0.1:{other_display.port}",
        }
        target = targets[target_kind]
        status, _, sock = await connect(world, target, issued.secret)
        sock.close()
        assert status == 403
        assert display.connections == 0
        assert other_display.connections == 0
        records = await audit(world, "console.gateway_denied")
        assert len(records) == 1
        assert records[0]["target"] == target
        assert records[0]["actor"] == "alice"
        assert records[0]["details"]["status"] == 403
        assert issued.secret not in repr(records)
    finally:
        await other_display.stop()


async def test_the_ticket_of_another_vm_does_not_open_this_vms_display(
    world: ConsoleWorld, display: TcpDisplay
) -> None:
    other_display = await TcpDisplay().start()
    try:
        await world.ticket(port=display.port)
        other = await world.ticket(vm_id=world.other_vm_id, port=other_display.port)
        status, _, sock = await connect(world, f"127.0.0.1:{display.port}", other.secret)
        sock.close()
        assert status == 403
        assert display.connections == 0
    finally:
        await other_display.stop()


async def raw_request(world: ConsoleWorld, data: bytes, *, wait: float = 10) -> bytes:
    def run() -> bytes:
        with socket.create_connection(world.gateway, timeout=wait) as sock:
            sock.sendall(data)
            got = b""
            while chunk := sock.recv(65536):
                got += chunk
            return got

    return await asyncio.to_thread(run)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"CONNECT nonsense HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
        (b"CONNECT 127.0.0.1:99999 HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
        (b"this is not http\r\n\r\n", b"400"),
        (b"GET http://example.org/ HTTP/1.1\r\nHost: example.org\r\n\r\n", b"405"),
        (b"CONNECT 127.0.0.1:5900 HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 20000 + b"\r\n\r\n", b"431"),
    ],
    ids=["no-port", "bad-port", "garbage", "plain-get", "huge-head"],
)
async def test_malformed_or_foreign_requests_are_refused(
    world: ConsoleWorld, request_bytes: bytes, status: bytes
) -> None:
    answer = await raw_request(world, request_bytes)
    assert answer.split(b" ")[1] == status
    assert b"Connection: close" in answer


async def test_a_client_that_never_finishes_its_request_is_cut_off(
    dashboard_factory: DashboardFactory, display: TcpDisplay
) -> None:
    world = await make_world(await dashboard_factory(gateway={"header_timeout": 0.5}))
    answer = await raw_request(world, b"CONNECT 127.0.0.1:", wait=30)
    assert answer.startswith(b"HTTP/1.1 408 ")


async def test_an_expired_ticket_opens_nothing(world: ConsoleWorld, display: TcpDisplay) -> None:
    issued = await world.ticket(port=display.port)
    world.dashboard.clock.advance(world.dashboard.services.consoles.tickets.ttl + 1)
    status, _, sock = await connect(world, f"127.0.0.1:{display.port}", issued.secret)
    sock.close()
    assert status == 407
    assert display.connections == 0


async def test_revoking_closes_open_tunnels_and_refuses_new_ones(
    world: ConsoleWorld, display: TcpDisplay
) -> None:
    issued = await world.ticket(port=display.port)
    status, _, sock = await connect(world, f"127.0.0.1:{display.port}", issued.secret)
    with sock:
        assert status == 200
        assert await exchange(sock, ECHO + b"hello") == ECHO + b"hello"
        closed = await world.dashboard.services.consoles.revoke_for_vm(world.vm_id, "reassigned")
        assert closed == 1
        assert await wait_closed(sock) == b""
    status, _, sock = await connect(world, f"127.0.0.1:{display.port}", issued.secret)
    sock.close()
    assert status == 407
    sessions = await audit(world, "console.session")
    assert sessions[0]["details"]["end_reason"] == "reassigned"


async def test_several_channels_of_one_ticket_are_one_audited_session(
    world: ConsoleWorld, display: TcpDisplay
) -> None:
    issued = await world.ticket(port=display.port)
    socks = []
    sent = 0
    for size in (100, 2000, 30000):
        status, _, sock = await connect(world, f"127.0.0.1:{display.port}", issued.secret)
        assert status == 200
        payload = ECHO + b"x" * size
        assert await exchange(sock, payload) == payload
        sent += len(payload)
        socks.append(sock)
    assert world.dashboard.services.consoles.sessions.connection_count == 3
    for sock in socks:
        sock.close()
    records = await audit(world, "console.session")
    assert len(records) == 1
    record = records[0]
    assert record["actor"] == "alice"
    assert record["target"] == "desk-1"
    assert record["client_address"] == "127.0.0.1"
    details = record["details"]
    assert details["via"] == "gateway"
    assert details["channels"] == 3
    assert details["bytes_to_vm"] == sent
    assert details["bytes_to_client"] == sent
    assert details["started_at"] <= details["ended_at"]
    assert issued.secret not in repr(records)


async def test_the_per_user_limit_refuses_one_connection_too_many(
    dashboard_factory: DashboardFactory, display: TcpDisplay
) -> None:
    world = await make_world(await dashboard_factory(console={"per_user_limit": 2}))
    issued = await world.ticket(port=display.port)
    opened = [await connect(world, f"127.0.0.1:{display.port}", issued.secret) for _ in range(2)]
    assert [status for status, _, _ in opened] == [200, 200]
    status, _head, sock = await connect(world, f"127.0.0.1:{display.port}", issued.secret)
    sock.close()
    assert status == 429
    for _, _, s in opened:
        s.close()


async def test_the_global_limit_refuses_a_connection_of_any_user_when_full(
    dashboard_factory: DashboardFactory, display: TcpDisplay
) -> None:
    world = await make_world(await dashboard_factory(console={"global_limit": 2, "per_user_limit": 5}))
    alices = await world.ticket(port=display.port)
    admins = await world.ticket(user_id=world.admin_id, port=display.port)
    opened = [await connect(world, f"127.0.0.1:{display.port}", alices.secret) for _ in range(2)]
    assert [status for status, _, _ in opened] == [200, 200]
    status, _head, sock = await connect(world, f"127.0.0.1:{display.port}", admins.secret)
    sock.close()
    assert status == 429, "another user is refused too: the dashboard as a whole is full"
    opened.pop()[2].close()
    sessions = world.dashboard.services.consoles.sessions
    await eventually(lambda: sessions.connection_count < 2, "the closed console's connection gone")
    status, _head, sock = await connect(world, f"127.0.0.1:{display.port}", admins.secret)
    sock.close()
    assert status == 200, "a freed connection can be used again"
    for _, _, s in opened:
        s.close()


async def test_ending_one_console_session_leaves_the_others_open(
    world: ConsoleWorld, display: TcpDisplay
) -> None:
    first = await world.ticket(port=display.port)
    second = await world.ticket(port=display.port)
    _, _, sock1 = await connect(world, f"127.0.0.1:{display.port}", first.secret)
    _, _, sock2 = await connect(world, f"127.0.0.1:{display.port}", second.secret)
    with sock1, sock2:
        assert await world.dashboard.services.consoles.revoke_ticket(first.record.id, "ended_by_admin") == 1
        assert await wait_closed(sock1) == b""
        assert await exchange(sock2, ECHO + b"still here") == ECHO + b"still here"


async def test_a_client_that_stops_reading_holds_the_display_up_and_then_gets_every_byte(
    world: ConsoleWorld, display: TcpDisplay
) -> None:
    """After the handshake the gateway splices in the kernel, one pipe per direction: while the
    client reads nothing, the display is held up by TCP instead of the gateway taking its stream;
    once it reads again, everything arrives byte-exact and in order."""
    total = 256 * 1024 * 1024
    issued = await world.ticket(port=display.port)
    status, _head, sock = await connect(world, f"127.0.0.1:{display.port}", issued.secret)
    with sock:
        assert status == 200
        sock.sendall(stream_request(total))
        stalled_at = await wait_until_stalled(display)
        # Socket buffers and one pipe (about 18 MB here), not the stream: a relay that took what
        # the display sends would let all 256 MiB through.
        assert stalled_at < total // 4

        def drain() -> int:
            sock.settimeout(60)
            offset = 0
            while offset < total:
                chunk = sock.recv(1 << 20)
                assert chunk, f"closed after {offset} bytes"
                assert chunk == pattern(offset, len(chunk))
                offset += len(chunk)
            return offset

        assert await asyncio.to_thread(drain) == total == display.streamed
