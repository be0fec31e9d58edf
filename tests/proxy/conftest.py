"""Fixtures of the console proxy tests: a TCP peer standing in for a display, and the rows
(hypervisor, VMs, users) console tickets refer to.

Where the SPICE protocol itself does not matter (byte transport, limits, back-pressure,
refusals) the proxy is pointed at :class:`TcpDisplay`, a real TCP server on 127.0.0.1.
The tests that need SPICE use real qemu through the harness (test_console_kvm.py).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from databases import Database

from app.auth.accounts import create_local_user
from app.clock import utcnow
from app.db.schema import hypervisors, vms
from app.proxy.tickets import IssuedTicket
from tests.dashboard import RunningDashboard

ECHO = b"ECHO"
STREAM = b"STRM"
HOLD = b"HOLD"
PATTERN_PERIOD = 251


def stream_request(size: int) -> bytes:
    """What makes :class:`TcpDisplay` stream ``size`` pattern bytes."""
    return STREAM + struct.pack("!Q", size)


def pattern(offset: int, size: int) -> bytes:
    """Bytes ``offset .. offset+size`` of the display's stream: byte i is ``i % 251``."""
    start = offset % PATTERN_PERIOD
    repeats = (start + size) // PATTERN_PERIOD + 1
    return (bytes(range(PATTERN_PERIOD)) * repeats)[start : start + size]


class TcpDisplay:
    """A TCP server standing in for a display: ``ECHO`` echoes (itself included), ``STRM`` + u64 n
    streams n pattern bytes as fast as the reader takes them (from one preallocated buffer),
    ``HOLD`` reads nothing until ``release`` is set and then checks it receives the pattern."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.connections = 0
        self.open_connections = 0
        self.streamed = 0
        # HOLD connections read nothing until this is set, then count what they receive.
        self.release = asyncio.Event()
        self.received = 0
        self.received_intact = True
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        # One period-aligned block, so every chunk continues the pattern seamlessly.
        self._block = memoryview(pattern(0, PATTERN_PERIOD * 1024))

    async def start(self) -> TcpDisplay:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def hang_up(self) -> None:
        """Close every open connection, as qemu closes its display's sockets when its VM stops."""
        for writer in list(self._writers):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        self.open_connections += 1
        try:
            command = await reader.readexactly(4)
            if command == ECHO:
                writer.write(command)
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            elif command == STREAM:
                (total,) = struct.unpack("!Q", await reader.readexactly(8))
                await self._stream(writer, total)
            elif command == HOLD:
                await self.release.wait()
                while data := await reader.read(65536):
                    self.received_intact &= data == pattern(self.received, len(data))
                    self.received += len(data)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open_connections -= 1
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()

    async def _stream(self, writer: asyncio.StreamWriter, total: int) -> None:
        # A small write buffer: the display holds at most 64 KiB of its own.
        writer.transport.set_write_buffer_limits(high=64 * 1024)
        block = self._block
        chunk = 64 * 1024 - (64 * 1024) % PATTERN_PERIOD
        sent = 0
        while sent < total:
            size = min(chunk, total - sent)
            offset = sent % PATTERN_PERIOD
            writer.write(block[offset : offset + size])
            await writer.drain()
            sent += size
            self.streamed += size


@pytest.fixture
async def display() -> AsyncIterator[TcpDisplay]:
    server = await TcpDisplay().start()
    yield server
    await server.stop()


@dataclass
class ConsoleWorld:
    """A dashboard with a hypervisor row, two VMs and a client user to issue tickets for."""

    dashboard: RunningDashboard
    admin_id: int
    user_id: int
    vm_id: int
    other_vm_id: int

    @property
    def db(self) -> Database:
        return self.dashboard.services.db

    async def ticket(
        self, *, vm_id: int | None = None, user_id: int | None = None, host: str = "127.0.0.1", port: int
    ) -> IssuedTicket:
        return await self.dashboard.services.consoles.tickets.issue(
            user_id=user_id or self.user_id, vm_id=vm_id or self.vm_id, host=host, port=port
        )

    @property
    def gateway(self) -> tuple[str, int]:
        gateway = self.dashboard.services.consoles.gateway
        assert gateway is not None
        return ("127.0.0.1", gateway.port)

    @property
    def origin(self) -> str:
        return self.dashboard.url

    def ws_url(self, vm_id: int | None = None) -> str:
        base = self.dashboard.url.replace("https://", "wss://").replace("http://", "ws://")
        return base + f"/console/ws/{vm_id or self.vm_id}"


async def make_world(dashboard: RunningDashboard) -> ConsoleWorld:
    db = dashboard.services.db
    admin_id = await db.fetch_val("SELECT id FROM users WHERE username = 'admin'")
    user_id = await create_local_user(db, "alice", "alice-test-password-1", role="client")
    hv_id = await db.execute(
        hypervisors.insert().values(name="rows-only", transport="test", libvirt_uri="test:///default")
    )
    vm_id = await db.execute(
        vms.insert().values(name="desk-1", hypervisor_id=hv_id, kind="simple", created_at=utcnow())
    )
    other_vm_id = await db.execute(
        vms.insert().values(name="desk-2", hypervisor_id=hv_id, kind="simple", created_at=utcnow())
    )
    return ConsoleWorld(dashboard, int(admin_id), int(user_id), int(vm_id), int(other_vm_id))


@pytest.fixture
async def world(dashboard: RunningDashboard) -> ConsoleWorld:
    return await make_world(dashboard)
