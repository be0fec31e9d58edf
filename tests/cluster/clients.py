"""Talking to replicas as browsers and thin clients do, in the cluster tests."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.cluster.lab import ClusterLab, Replica
from tests.dashboard import BrowserLikeClient
from tests.proxy.spice_client import WebSocketStream


def console_socket(replica: Replica, vm_id: int, ticket: str) -> WebSocketStream:
    return WebSocketStream.open(
        f"ws://127.0.0.1:{replica.http_port}/console/ws/{vm_id}",
        cookie=f"kvmvdi_console={ticket}",
        origin=replica.url,
    )


def closed_code(stream: WebSocketStream, within: float) -> int | None:
    """Read until the console websocket closes; its close code (None if it stayed open)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            stream.conn.recv(timeout=max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            return None
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else 1006
    return None


@asynccontextmanager
async def live_socket(replica: Replica, client: BrowserLikeClient) -> AsyncIterator[ClientConnection]:
    cookie = {"Cookie": f"kvmvdi_session={client.http.cookies.get('kvmvdi_session')}"}
    async with connect(
        f"ws://127.0.0.1:{replica.http_port}/live",
        origin=replica.url,  # type: ignore[arg-type]
        additional_headers=cookie,
        proxy=None,
    ) as socket:
        hello = json.loads(await asyncio.wait_for(socket.recv(), 10))
        assert hello["topic"] == "hello"
        yield socket


async def next_message(
    socket: ClientConnection, topic: str, match: dict[str, Any], *, within: float = 15
) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            message = json.loads(await socket.recv())
            data = message.get("data", {})
            if message.get("topic") == topic and all(data.get(k) == v for k, v in match.items()):
                return dict(data)


async def holders(cluster: ClusterLab, http: httpx.AsyncClient) -> list[str]:
    """The running replicas that say they hold the duties now."""
    found = []
    for replica in cluster.replicas:
        if not replica.running:
            continue
        try:
            if (await http.get(f"{replica.url}/healthz")).json()["duties"]:
                found.append(replica.name)
        except httpx.HTTPError:
            continue
    return found


def qemu_img_writing(part: Path) -> int | None:
    """PID of the ``qemu-img convert`` writing ``part``, if running."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"qemu-img") and str(part).encode() in argv:
            return int(entry)
    return None
