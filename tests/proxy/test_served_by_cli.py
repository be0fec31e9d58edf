"""The console gateways as ``kvm-vdi serve`` runs them: uvicorn on uvloop with the dashboard's
websocket protocol, in a process of its own (the other tests run the app on the test's loop)."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.typing import Origin, Subprotocol

from app import db as database
from app.auth.accounts import create_local_user
from app.clock import SYSTEM_CLOCK, utcnow
from app.db.schema import hypervisors, vms
from app.proxy.tickets import TicketStore
from tests.dashboard import REPO, free_port
from tests.proxy.conftest import ECHO, TcpDisplay, pattern, stream_request
from tests.proxy.spice_client import connect_through_gateway
from tests.services.process import spawn, stop_process
from tests.services.rundir import RunDir
from tests.waiting import eventually


@dataclass
class Served:
    url: str
    gateway: tuple[str, int]
    tickets: TicketStore
    user_id: int
    vm_id: int


@pytest.fixture
async def served(run_dir: RunDir, tmp_path: Path) -> AsyncIterator[Served]:
    url = f"sqlite:///{tmp_path / 'vdi.sqlite3'}"
    await asyncio.to_thread(database.upgrade, url)
    db = database.connect_database(url)
    await db.connect()
    await create_local_user(db, "admin", "admin-test-password-1", role="admin")
    user_id = await create_local_user(db, "carol", "carol-test-password-1", role="client")
    hv_id = await db.execute(
        hypervisors.insert().values(name="rows-only", transport="test", libvirt_uri="test:///default")
    )
    vm_id = await db.execute(
        vms.insert().values(name="desk-9", hypervisor_id=hv_id, kind="simple", created_at=utcnow())
    )
    port, gateway_port = free_port(), free_port()
    env = {
        **os.environ,
        "KVMVDI_DATABASE_URL": url,
        "KVMVDI_DATA_DIR": str(tmp_path / "var"),
        "KVMVDI_ASSETS_DIR": str(REPO / "node_modules"),
        "KVMVDI_GATEWAY__PORT": str(gateway_port),
        "KVMVDI_SECURITY__SESSION_SECRET": "cli-test-secret",
    }
    process = spawn(
        [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)],
        run_id=run_dir.id,
        log_path=tmp_path / "serve.log",
        env=env,
        cwd=REPO,
    )
    try:

        def listening() -> bool:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                socket.create_connection(("127.0.0.1", gateway_port), timeout=1).close()
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return False
            return True

        await eventually(listening, "kvm-vdi serve listening on its dashboard and gateway ports")
        yield Served(
            f"http://127.0.0.1:{port}",
            ("127.0.0.1", gateway_port),
            TicketStore(db, ttl=60, clock=SYSTEM_CLOCK),
            user_id,
            vm_id,
        )
    finally:
        stop_process(process)
        await db.disconnect()


async def test_kvm_vdi_serve_bridges_a_console_websocket_on_uvloop_without_deflate(
    served: Served, display: TcpDisplay
) -> None:
    issued = await served.tickets.issue(
        user_id=served.user_id, vm_id=served.vm_id, host="127.0.0.1", port=display.port
    )
    async with connect(
        served.url.replace("http://", "ws://") + f"/console/ws/{served.vm_id}",
        additional_headers={"Cookie": f"kvmvdi_console={issued.secret}"},
        origin=Origin(served.url),
        subprotocols=[Subprotocol("binary")],
        compression="deflate",
        max_size=None,
    ) as ws:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        await ws.send(stream_request(32 * 1024 * 1024))
        offset = 0
        while offset < 32 * 1024 * 1024:
            message = await ws.recv()
            assert isinstance(message, bytes)
            assert message == pattern(offset, len(message))
            offset += len(message)


async def test_kvm_vdi_serve_tunnels_a_connect_on_uvloop(served: Served, display: TcpDisplay) -> None:
    issued = await served.tickets.issue(
        user_id=served.user_id, vm_id=served.vm_id, host="127.0.0.1", port=display.port
    )

    def tunnel() -> bytes:
        answer, stream = connect_through_gateway(
            served.gateway, f"127.0.0.1:{display.port}", ticket=issued.secret
        )
        assert answer.status == 200
        try:
            payload = ECHO + bytes(range(256)) * 4096
            stream.send(payload)
            return stream.recv_exact(len(payload))
        finally:
            stream.close()

    assert await asyncio.to_thread(tunnel) == ECHO + bytes(range(256)) * 4096
