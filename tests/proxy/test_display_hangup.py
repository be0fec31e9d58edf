"""A display that hangs up: the console session finds out whether its desktop stopped.

qemu closes its SPICE sockets as its VM stops, and that can reach the proxy before libvirt's
stop event reaches the console service (which handles it after database work). Here the
desktop is a domain of libvirt's test driver behind a TCP stand-in display; its stop event is
held back by a listener placed before the others (as a slow one would be) until the console
has ended."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from websockets.asyncio.client import ClientConnection

from app.hyper import DomainEvent, Hypervisor
from app.proxy.service import STOPPED_STATES
from tests.broker.records import add_connected_hypervisor, add_vm
from tests.proxy.conftest import ECHO, ConsoleWorld, TcpDisplay
from tests.proxy.test_gateway import connect, exchange, wait_closed
from tests.proxy.test_websocket import close_code, open_console, receive_exactly
from tests.waiting import eventually


@dataclass
class Desktop:
    hv: Hypervisor
    name: str
    vm_id: int


@pytest.fixture
async def desktop(world: ConsoleWorld) -> AsyncIterator[Desktop]:
    """A running domain of the test driver, managed by the dashboard as a desktop."""
    name = "hangup-desktop"
    registry = world.dashboard.services.hypervisors
    hv_id = await add_connected_hypervisor(registry, world.db, "hangup-hv")
    hv = registry.get(hv_id)
    # The row first: a domain the dashboard finds without one is adopted as an unclassified VM.
    vm_id = await add_vm(world.db, name, hv_id, kind="simple", state="running")
    events: list[DomainEvent] = []

    def seen(event: DomainEvent) -> None:
        if event.name == name:
            events.append(event)

    # Listeners take each event in turn: once the last one saw the start, the console service
    # is done with the definition's event (which would revoke tickets issued meanwhile).
    remove = registry.add_domain_listener(seen)
    await hv.define(
        f"<domain type='test'><name>{name}</name><memory>65536</memory><os><type>hvm</type></os></domain>"
    )
    await hv.start(name)
    await eventually(lambda: any(e.event == "started" for e in events), "the dashboard saw the start")
    remove()
    yield Desktop(hv, name, vm_id)
    if await hv.domain_state(name) == "running":
        await hv.destroy(name)
    await hv.undefine(name)


@contextlib.asynccontextmanager
async def stop_event_held_back(world: ConsoleWorld, name: str) -> AsyncIterator[list[DomainEvent]]:
    """Domain ``name``'s stop events reach no listener but this one until the block ends."""
    held: list[DomainEvent] = []
    released = asyncio.Event()

    async def hold(event: DomainEvent) -> None:
        if event.name == name and event.state in STOPPED_STATES:
            held.append(event)
            await released.wait()

    remove = world.dashboard.services.hypervisors.add_domain_listener(hold, first=True)
    try:
        yield held
    finally:
        released.set()
        remove()


async def session_records(world: ConsoleWorld, ticket_ids: set[int]) -> dict[str, str]:
    """The end reason of each console session opened with ``ticket_ids``, by gateway."""

    async def recorded() -> dict[str, str] | None:
        records = await world.dashboard.services.audit.recent(action="console.session")
        ours = [r["details"] for r in records if r["details"]["ticket_id"] in ticket_ids]
        return {d["via"]: d["end_reason"] for d in ours} if len(ours) == len(ticket_ids) else None

    return await eventually(recorded, "the console sessions' audit records")


@dataclass
class TwoConsoles:
    """One console of the desktop in a browser (websocket), one in a native client (gateway)."""

    websocket: ClientConnection
    tunnel: socket.socket
    ticket_ids: set[int]


@contextlib.asynccontextmanager
async def two_consoles(
    world: ConsoleWorld, desktop: Desktop, display: TcpDisplay
) -> AsyncIterator[TwoConsoles]:
    in_browser = await world.ticket(vm_id=desktop.vm_id, port=display.port)
    native = await world.ticket(vm_id=desktop.vm_id, port=display.port)
    async with open_console(world, in_browser.secret, vm_id=desktop.vm_id) as ws:
        await ws.send(ECHO + b"hi")
        assert await receive_exactly(ws, 6) == ECHO + b"hi"
        status, _head, sock = await connect(world, f"127.0.0.1:{display.port}", native.secret)
        with sock:
            assert status == 200
            assert await exchange(sock, ECHO + b"hi") == ECHO + b"hi"
            yield TwoConsoles(ws, sock, {in_browser.record.id, native.record.id})


async def test_a_display_hanging_up_before_the_stop_event_ends_its_consoles_as_stopped(
    world: ConsoleWorld, display: TcpDisplay, desktop: Desktop
) -> None:
    async with (
        two_consoles(world, desktop, display) as consoles,
        stop_event_held_back(world, desktop.name) as held,
    ):
        await desktop.hv.destroy(desktop.name)
        await eventually(lambda: held, "libvirt's stop event (held back)")
        display.hang_up()
        # The page is told the desktop stopped, though the stop event has not arrived.
        assert await close_code(consoles.websocket) == (4404, "The desktop was stopped.")
        assert await wait_closed(consoles.tunnel) == b""
        ended = await session_records(world, consoles.ticket_ids)
    assert ended == {"websocket": "vm_stopped", "gateway": "vm_stopped"}


async def test_a_display_hanging_up_while_its_desktop_runs_ends_its_consoles_as_closed(
    world: ConsoleWorld, display: TcpDisplay, desktop: Desktop
) -> None:
    async with two_consoles(world, desktop, display) as consoles:
        display.hang_up()
        # Another client took the display over, say: the page says the desktop closed it.
        assert await close_code(consoles.websocket) == (1000, "")
        assert await wait_closed(consoles.tunnel) == b""
    assert await session_records(world, consoles.ticket_ids) == {"websocket": "closed", "gateway": "closed"}
    assert await desktop.hv.domain_state(desktop.name) == "running"
