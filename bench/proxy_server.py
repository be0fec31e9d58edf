"""The real dashboard (app factory, lifespan, middleware, console websocket, CONNECT gateway)
under uvicorn, as the proxy benchmark's process under test.

    python -m bench.proxy_server --dir DIR --port P --gateway-port G --display-port D [--ws IMPL]

``--ws ours`` is the dashboard's own protocol (what ``kvm-vdi serve`` runs); the stock
uvicorn implementations (websockets-sansio, websockets, wsproto; permessage-deflate off)
are there to compare. Prints ``ready`` once serving; then each ``ticket`` line on stdin
is answered with a fresh console ticket bound to 127.0.0.1:D (console tickets live 60 s), each
``ticket-tls`` line with one bound to the TLS display 127.0.0.1:T (``--display-tls-port``), which
the bridge reaches over TLS, checked against the CA in ``--ca-dir``.

``--users N`` adds portal users ``storm-000`` ... with the password ``storm-password-123``
(for the log-in storm benchmark); ``--security KEY=VALUE`` sets a ``[security]`` setting.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import sys
import threading
from pathlib import Path
from typing import Any

import uvicorn

from app import db as database
from app.application import create_app
from app.auth.accounts import create_local_user
from app.auth.passwords import hash_password
from app.clock import utcnow
from app.db.schema import hypervisors, users, vms
from app.proxy.wsprotocol import DashboardWebSocketProtocol
from app.settings import Settings

STORM_PASSWORD = "storm-password-123"


async def _records(url: str, storm_users: int) -> tuple[int, int]:
    await asyncio.to_thread(database.upgrade, url)
    db = database.connect_database(url)
    await db.connect()
    try:
        # An admin exists, so the first-start banner does not interleave with the control output.
        await create_local_user(db, "admin", "bench-admin-password-123", role="admin")
        user_id = await create_local_user(db, "bench", "bench-password-123", role="client")
        if storm_users:
            # One hash for all: each log-in still verifies it in full.
            digest = hash_password(STORM_PASSWORD)
            await db.execute_many(
                users.insert(),
                [
                    {
                        "username": f"storm-{n:03d}",
                        "role": "client",
                        "password_hash": digest,
                        "created_at": utcnow(),
                    }
                    for n in range(storm_users)
                ],
            )
        hv_id = await db.execute(
            hypervisors.insert().values(name="bench", transport="test", libvirt_uri="test:///default")
        )
        vm_id = await db.execute(
            vms.insert().values(name="bench-desktop", hypervisor_id=hv_id, kind="simple", created_at=utcnow())
        )
        return int(user_id), int(vm_id)
    finally:
        await db.disconnect()


async def serve(args: argparse.Namespace) -> None:
    directory = Path(args.dir)
    url = f"sqlite:///{directory / 'vdi.sqlite3'}"
    user_id, vm_id = await _records(url, args.users)
    values: dict[str, Any] = {
        "database_url": url,
        "data_dir": directory / "var",
        "assets_dir": Path("node_modules"),
        "log_level": "WARNING",
        "server": {"host": "127.0.0.1", "port": args.port},
        "gateway": {"host": "127.0.0.1", "port": args.gateway_port},
        # The benchmark opens 1,000 connections with one ticket: lift the per-user limit.
        "console": {"per_user_limit": 100_000, "global_limit": 100_000},
        "security": {"session_secret": "bench-session-secret", **dict(args.security)},
    }
    if args.ca_dir:
        values["console"]["ca_dir"] = args.ca_dir
    settings = Settings(**values)
    app = create_app(settings)
    options: dict[str, Any] = {}
    if args.ws == "ours":
        options["ws"] = DashboardWebSocketProtocol
    else:
        options["ws"] = args.ws
        options["ws_per_message_deflate"] = False
    config = uvicorn.Config(
        app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, **options
    )
    server = uvicorn.Server(config)
    loop = asyncio.get_running_loop()

    async def ticket(tls: bool) -> str:
        issued = await app.state.services.consoles.tickets.issue(
            user_id=user_id,
            vm_id=vm_id,
            host="127.0.0.1",
            port=None if tls else args.display_port,
            tls_port=args.display_tls_port if tls else None,
        )
        return issued.secret

    def control() -> None:
        for line in sys.stdin:
            if line.strip() in ("ticket", "ticket-tls"):
                tls = line.strip() == "ticket-tls"
                secret = asyncio.run_coroutine_threadsafe(ticket(tls), loop).result()
                print(f"ticket {vm_id} {secret}", flush=True)
        server.should_exit = True

    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
            return
        await asyncio.sleep(0.05)
    print("ready", flush=True)
    threading.Thread(target=control, daemon=True).start()
    await serving


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.proxy_server")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--gateway-port", type=int, required=True)
    parser.add_argument("--display-port", type=int, required=True)
    parser.add_argument("--display-tls-port", type=int)
    parser.add_argument("--ca-dir")
    parser.add_argument(
        "--ws", default="ours", choices=["ours", "websockets-sansio", "websockets", "wsproto"]
    )
    parser.add_argument("--users", type=int, default=0, help="portal users for the log-in storm")
    parser.add_argument(
        "--security",
        action="append",
        default=[],
        type=lambda text: tuple(text.split("=", 1)),
        help="KEY=VALUE",
    )
    args = parser.parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    logging.basicConfig(level=logging.WARNING)
    import uvloop

    uvloop.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
