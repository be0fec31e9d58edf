"""The console websocket over TLS (wss://), as the HTML5 console uses it on an https dashboard."""

from __future__ import annotations

import ssl
from pathlib import Path

from websockets.asyncio.client import connect

from tests.dashboard import DashboardFactory
from tests.proxy.conftest import ECHO, TcpDisplay, make_world, pattern, stream_request
from tests.services.tls import issue_certificates


async def test_the_console_websocket_works_over_tls(
    dashboard_factory: DashboardFactory, display: TcpDisplay, tmp_path: Path
) -> None:
    tls = issue_certificates(tmp_path / "tls")
    world = await make_world(
        await dashboard_factory(
            server={"ssl_certfile": str(tls.cert), "ssl_keyfile": str(tls.key), "https": True}
        )
    )
    assert world.ws_url().startswith("wss://")
    issued = await world.ticket(port=display.port)
    trust = ssl.create_default_context(cafile=str(tls.ca))
    async with connect(
        world.ws_url(),
        ssl=trust,
        additional_headers={"Cookie": f"kvmvdi_console={issued.secret}"},
        origin=world.origin,  # type: ignore[arg-type]
        subprotocols=["binary"],  # type: ignore[list-item]
        max_size=None,
    ) as ws:
        await ws.send(ECHO + b"over tls")
        received = b""
        while len(received) < 12:
            message = await ws.recv()
            assert isinstance(message, bytes)
            received += message
        assert received == ECHO + b"over tls"
    async with connect(
        world.ws_url(),
        ssl=trust,
        additional_headers={"Cookie": f"kvmvdi_console={issued.secret}"},
        origin=world.origin,  # type: ignore[arg-type]
        subprotocols=["binary"],  # type: ignore[list-item]
        max_size=None,
    ) as ws:
        total = 16 * 1024 * 1024
        await ws.send(stream_request(total))
        offset = 0
        while offset < total:
            message = await ws.recv()
            assert isinstance(message, bytes)
            assert message == pattern(offset, len(message))
            offset += len(message)
