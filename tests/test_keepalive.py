"""Idle kept-alive connections, as ``kvm-vdi serve`` configures uvicorn (``serving_options``).

An HTTP client keeps an idle connection for reuse until its own expiry (httpx: 5 s). A server
that closes idle connections after the same time closes some of them just as a request is on
its way there, and that request gets a reset instead of an answer (under load it happened to a
desktop request during the database outage test). So the dashboard keeps an idle connection
open well past the time clients keep one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from app.server.options import serving_options
from app.settings import ServerSettings
from tests.services.ports import allocate_port, release_port
from tests.waiting import eventually

pytestmark = pytest.mark.slow  # the connection idles past httpx's own expiry

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
HTTPX_IDLE_EXPIRY = httpx.Limits().keepalive_expiry or 0.0


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
async def served_port() -> AsyncIterator[int]:
    """uvicorn on a loopback port with the dashboard's default protocols and limits."""
    port = allocate_port()
    config = uvicorn.Config(
        hello,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        **serving_options(ServerSettings()),
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started or task.done(), "uvicorn serving")
        assert server.started
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)
        release_port(port)


async def answer_status(reader: asyncio.StreamReader) -> int | None:
    """The status of the next answer on the connection (``None``: closed without one)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return int(head.split(b" ", 2)[1])


async def test_a_connection_idle_as_long_as_httpx_keeps_one_still_gets_its_answer(served_port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served_port)
    try:
        writer.write(REQUEST)
        assert await answer_status(reader) == 200
        # What is tested is time passing: the connection idles a little longer than httpx keeps
        # an idle connection for reuse, then the client's next request goes out on it.
        await asyncio.sleep(HTTPX_IDLE_EXPIRY + 1)
        writer.write(REQUEST)
        assert await answer_status(reader) == 200, "the server closed the idle connection"
    finally:
        writer.close()
