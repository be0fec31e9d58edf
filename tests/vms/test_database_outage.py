"""A database outage: 503 with Retry-After (never a 500 or a hung request), the live badge says
the service is degraded, and once the database is back what happened meanwhile is redone.

The outage is real: on MariaDB the suite's server is stopped and started again; on SQLite
another process holds the write lock, as a stuck tool would.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import websockets
from sqlalchemy.engine import make_url

from app.db.schema import console_epochs, console_tickets
from app.vms.records import get_vm
from tests.services.libvirt_host import LibvirtHost
from tests.services.mariadb import MariaDB
from tests.vms.test_api_and_live import live_socket
from tests.vms.world import GENEROUS, WorldFactory
from tests.waiting import eventually

pytestmark = pytest.mark.kvm

TIMEOUT = 3.0  # database_timeout of the dashboard under test


@contextmanager
def sqlite_write_lock(url: str) -> Iterator[None]:
    """Another process holds the database's write lock until the block ends."""
    path = make_url(url).database
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60);"
            " c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


@asynccontextmanager
async def outage(backend: str, request: pytest.FixtureRequest, url: str) -> AsyncIterator[None]:
    if backend == "mariadb":
        server: MariaDB = request.getfixturevalue("mariadb")
        await asyncio.to_thread(server.stop_server)
        try:
            yield
        finally:
            await asyncio.to_thread(server.start_server)
    else:
        # Taken and given back off the event loop: the dashboard under test shares it, and one of
        # its transactions may hold the lock the holder waits for.
        lock = sqlite_write_lock(url)
        await asyncio.to_thread(lock.__enter__)
        try:
            yield
        finally:
            await asyncio.to_thread(lock.__exit__, None, None, None)


async def next_service_state(socket: websockets.ClientConnection, wanted: str) -> dict[str, Any]:
    async with asyncio.timeout(GENEROUS):
        while True:
            message = json.loads(await socket.recv())
            if message.get("topic") == "service" and message["data"]["database"] == wanted:
                return dict(message["data"])


async def test_an_outage_answers_503_and_what_happened_meanwhile_is_redone_afterwards(
    world_factory: WorldFactory,
    hypervisor_host: LibvirtHost,
    database_backend: str,
    database_url: str,
    request: pytest.FixtureRequest,
) -> None:
    world = await world_factory([hypervisor_host], database_timeout=TIMEOUT)
    dashboard, db = world.dashboard, world.db
    name = world.name("outage")
    created = await world.service.create(
        {"name": name, "hypervisor_id": world.h0.id, "memory_mib": 64, "disk_size_gib": 1}
    )
    vm_id = created.vm_ids[0]
    vm = await get_vm(db, vm_id)
    assert vm is not None
    world.install_guest(world.h0, vm.disk_path, "banner")
    await world.service.power(vm_id, "start")
    await world.wait_state(vm_id, "running")
    admin = await world.admin()
    console = await admin.post(f"/vms/{vm_id}/console", json={}, headers={"Accept": "application/json"})
    assert console.status_code == 200, console.text
    socket = await live_socket(world, admin)
    assert json.loads(await socket.recv())["topic"] == "hello"
    sync = world.service.sync

    async with (
        outage(database_backend, request, database_url),
        httpx.AsyncClient(base_url=dashboard.url, timeout=30) as http,
    ):
        # A write the database cannot take: 503 with Retry-After, within the database timeout.
        started = time.monotonic()
        login = await http.post("/api/v1/login", json={"username": "nobody", "password": "whatever-1"})
        assert login.status_code == 503, login.text
        assert login.json()["error"] == "database_unavailable" and int(login.headers["Retry-After"]) >= 1
        assert time.monotonic() - started < 2 * TIMEOUT + 5
        degraded = await next_service_state(socket, "unavailable")
        assert degraded["reason"]
        if database_backend == "mariadb":
            page = await admin.get("/vms", headers={"Accept": "text/html"})
            assert page.status_code == 503 and "degraded" in page.text and "Retry-After" in page.headers
            api = await admin.get("/api/v1/admin/vms")
            assert (api.status_code, api.json()["error"]) == (503, "database_unavailable")
        # Behind the dashboard's back the desktop stops; the event cannot be stored.
        seen = sync.events_seen
        hypervisor_host.virsh("destroy", name)
        await eventually(lambda: sync.events_seen != seen, "the stop event seen", timeout=GENEROUS)
        await world.settle()

    await next_service_state(socket, "available")
    await socket.close()

    async def redone() -> bool:
        stored = await get_vm(db, vm_id)
        tickets = await db.fetch_all(sa.select(console_tickets).where(console_tickets.c.vm_id == vm_id))
        epoch = await db.fetch_one(console_epochs.select().where(console_epochs.c.vm_id == vm_id))
        revoked = bool(tickets) and all(t["revoke_reason"] == "vm_stopped" for t in tickets)
        return stored is not None and stored.state == "shutoff" and revoked and epoch is None

    await eventually(redone, "the stop redone after the outage", timeout=GENEROUS)
    # And the dashboard serves again.
    assert (await admin.get("/api/v1/admin/vms")).status_code == 200
