"""The soak's load, as a process of its own: consoles, live admin pages and desktop churn.

    python -m bench.soak_clients --port P --pool ID [--live N] [--churn-users N]

- one console websocket per ``console VM_ID SECRET`` line on stdin (tickets live a minute: they
  come as they are issued, and no secret is in argv; ``opened`` ends them), through the
  dashboard's bridge to the echoing stand-in display: each sends ``--message`` bytes every
  ``--every`` seconds (jittered) and checks the echo;
- ``--live`` ``/live`` websockets of one admin session (the dashboard's pages hold one each),
  reading every event; the admin session also reads ``/api/v1/admin/summary`` now and then;
- ``--churn-users`` portal users, each in a loop: request a desktop of the pool (202 booting is
  asked again after its Retry-After), heartbeat its lease, release it, pause.

Prints ``started`` once every console and page is open; on ``stop`` (or the end of stdin) it
closes everything and prints one JSON line: counts and the errors (anything unexpected: a
refused or failed request, a closed socket, a wrong or late echo). It stands for clients on
other machines, so it runs at a lower CPU priority than the dashboard.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import resource
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvloop
from websockets.asyncio.client import ClientConnection, connect

from tests.broker.records import CLIENT_PASSWORD
from tests.dashboard import ADMIN_PASSWORD, BrowserLikeClient

ECHO_TIMEOUT = 60.0
OPEN_CONCURRENCY = 32
DRAIN_SECONDS = 120.0


@dataclass
class Tally:
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    examples: list[str] = field(default_factory=list)
    stopping: bool = False

    def error(self, kind: str, detail: object) -> None:
        if self.stopping:
            return
        self.errors[kind] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{kind}: {detail}")


class Load:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.base = f"http://127.0.0.1:{args.port}"
        self.ws_base = f"ws://127.0.0.1:{args.port}"
        self.tally = Tally()
        self.sockets: list[ClientConnection] = []
        self.tasks: list[asyncio.Task[None]] = []
        # Set at "stop": each churning user ends the cycle it is in (its lease released), then stops.
        self.draining = False

    async def _open(self, path: str, cookie: str) -> ClientConnection:
        socket = await connect(
            self.ws_base + path,
            origin=self.base,  # type: ignore[arg-type]
            additional_headers={"Cookie": cookie},
            subprotocols=["binary"],  # type: ignore[list-item]
            compression=None,
            open_timeout=120,
            max_size=None,
        )
        self.sockets.append(socket)
        return socket

    # Consoles

    async def open_console(self, vm_id: int, secret: str) -> ClientConnection:
        socket = await self._open(f"/console/ws/{vm_id}", f"kvmvdi_console={secret}")
        await socket.send(b"E")
        return socket

    async def console(self, socket: ClientConnection) -> None:
        message = os.urandom(self.args.message)
        await asyncio.sleep(random.uniform(0, self.args.every))
        try:
            while True:
                await socket.send(message)
                echoed = b""
                async with asyncio.timeout(ECHO_TIMEOUT):
                    while len(echoed) < len(message):
                        echoed += bytes(await socket.recv())  # type: ignore[arg-type]
                if echoed != message:
                    self.tally.error("console_echo_wrong", f"{len(echoed)} bytes")
                    return
                self.tally.counts["console_echoes"] += 1
                self.tally.counts["console_bytes"] += 2 * len(message)
                await asyncio.sleep(self.args.every * random.uniform(0.5, 1.5))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.tally.error("console_closed", repr(exc))

    # Live pages

    async def live(self, socket: ClientConnection) -> None:
        try:
            first = json.loads(await socket.recv())
            if first.get("topic") != "hello":
                self.tally.error("live_no_hello", first)
                return
            async for text in socket:
                json.loads(text)
                self.tally.counts["live_events"] += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.tally.error("live_closed", repr(exc))
        else:
            self.tally.error("live_closed", "closed by the dashboard")

    async def admin_reads(self, admin: BrowserLikeClient) -> None:
        while True:
            await asyncio.sleep(30)
            try:
                response = await admin.get("/api/v1/admin/summary")
            except httpx.HTTPError as exc:
                self.tally.error("admin_read", repr(exc))
                continue
            self.tally.counts["admin_reads"] += 1
            if response.status_code != 200:
                self.tally.error("admin_read", response.status_code)

    # Churn

    async def churn(self, http: httpx.AsyncClient, username: str) -> None:
        token = await self.log_in(http, username)

        async def call(kind: str, path: str, expected: tuple[int, ...]) -> httpx.Response | None:
            nonlocal token
            try:
                response = await http.post(path, headers={"Authorization": f"Bearer {token}"})
                if response.status_code == 401:
                    # The token ran out (an hour, by default): log in again, as a thin client does.
                    token = await self.log_in(http, username)
                    self.tally.counts["login_again"] += 1
                    response = await http.post(path, headers={"Authorization": f"Bearer {token}"})
            except httpx.HTTPError as exc:
                self.tally.error(kind, repr(exc))
                return None
            self.tally.counts[f"{kind}_{response.status_code}"] += 1
            if response.status_code not in expected:
                self.tally.error(kind, f"{response.status_code} {response.text[:200]}")
                return None
            return response

        desktop = f"/api/v1/pools/{self.args.pool}/desktop"
        await asyncio.sleep(random.uniform(0, self.args.pause))
        while not self.draining:
            answer = await call("desktop_request", desktop, (200, 202))
            while answer is not None and answer.status_code == 202:
                await asyncio.sleep(float(answer.headers.get("retry-after", "1")))
                answer = await call("desktop_request", desktop, (200, 202))
            if answer is None:
                await asyncio.sleep(self.args.pause)
                continue
            lease = answer.json()["lease"]["id"]
            for _ in range(self.args.heartbeats):
                await asyncio.sleep(1)
                await call("heartbeat", f"/api/v1/leases/{lease}/heartbeat", (200,))
            await call("release", f"/api/v1/leases/{lease}/release", (204,))
            await asyncio.sleep(random.uniform(0.5, 1.5) * self.args.pause)

    async def log_in(self, http: httpx.AsyncClient, username: str) -> str:
        body = {"username": username, "password": CLIENT_PASSWORD}
        response = await http.post("/api/v1/login", json=body)
        response.raise_for_status()
        token: str = response.json()["token"]
        return token

    # The whole

    async def run(self) -> dict[str, Any]:
        lines: asyncio.Queue[str] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def read_stdin() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(lines.put_nowait, line.strip())
            loop.call_soon_threadsafe(lines.put_nowait, "stop")

        threading.Thread(target=read_stdin, daemon=True).start()
        gate = asyncio.Semaphore(OPEN_CONCURRENCY)

        async def gated(vm_id: int, secret: str) -> ClientConnection | None:
            async with gate:
                try:
                    return await self.open_console(vm_id, secret)
                except Exception as exc:
                    self.tally.error("console_open", repr(exc))
                    return None

        opening = []
        while (line := await lines.get()) != "opened":
            _console, vm_id, secret = line.split()
            opening.append(asyncio.ensure_future(gated(int(vm_id), secret)))
        consoles = [socket for socket in await asyncio.gather(*opening) if socket is not None]
        admin = BrowserLikeClient(self.base)
        response = await admin.login("admin", ADMIN_PASSWORD)
        if response.status_code != 303:
            raise RuntimeError(f"the admin log-in failed: {response.status_code}")
        cookie = "; ".join(f"{name}={value}" for name, value in admin.http.cookies.items())
        pages = [await self._open("/live", cookie) for _ in range(self.args.live)]
        # A connection per request, as the thin client makes them: a request sent on a kept-alive
        # connection the dashboard is closing at that moment is lost (HTTP/1.1 has no way back), and
        # on a starved machine a client can read an answer seconds after it was sent.
        limits = httpx.Limits(max_connections=self.args.churn_users, max_keepalive_connections=0)
        http = httpx.AsyncClient(base_url=self.base, timeout=120, limits=limits)
        self.tasks += [asyncio.create_task(self.console(s)) for s in consoles]
        self.tasks += [asyncio.create_task(self.live(s)) for s in pages]
        self.tasks.append(asyncio.create_task(self.admin_reads(admin)))
        churning = [
            asyncio.create_task(self.churn(http, f"soak-{n:03d}")) for n in range(self.args.churn_users)
        ]
        self.tasks += churning
        print("started", flush=True)
        while await lines.get() != "stop":
            pass
        # No request is cut off mid-way (the dashboard would log the client's disconnect).
        self.draining = True
        await asyncio.wait(churning, timeout=DRAIN_SECONDS)
        self.tally.stopping = True
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.gather(*(s.close() for s in self.sockets), return_exceptions=True)
        await http.aclose()
        await admin.aclose()
        return {
            "consoles": len(consoles),
            "live_pages": len(pages),
            "churn_users": self.args.churn_users,
            "counts": dict(self.tally.counts),
            "errors": dict(self.tally.errors),
            "error_examples": self.tally.examples,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.soak_clients")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pool", type=int, required=True)
    parser.add_argument("--live", type=int, default=200)
    parser.add_argument("--churn-users", type=int, default=8)
    parser.add_argument("--heartbeats", type=int, default=2)
    parser.add_argument(
        "--pause", type=float, default=1.0, help="seconds between a release and the next request"
    )
    parser.add_argument("--every", type=float, default=5.0, help="seconds between a console's messages")
    parser.add_argument("--message", type=int, default=1024, help="bytes per console message")
    args = parser.parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.nice(5)
    print(json.dumps(uvloop.run(Load(args).run())), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
