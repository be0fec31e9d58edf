"""The dashboard under the soak, as a process of its own (so its memory and descriptors are its own).

    python -m bench.soak_server --dir DIR --database-url-file F --display-port D [--desktops N] [--users N]

The real dashboard (app factory, lifespan, uvicorn with the dashboard's own protocols, as the
test harness starts it) on the database whose URL is in file F (it holds a password: not argv).
Its pool of ``--desktops`` boot-sector desktops lives on the harness's hypervisor h0 (its own
libvirtd and sshd, registered over SSH with a pinned host key, as bench.broker does), with
``--users`` portal users (``soak-000`` ..., password ``CLIENT_PASSWORD`` of the broker test
records). The long-lived consoles are opened on one more VM, ``soak-console``, on libvirt's test
driver, whose SPICE display is the stand-in display on port D, outside the pool (a released
desktop's consoles are revoked: those of the pool come and go with the churn). An event-loop lag
monitor (the product's, sampling every 0.1 s) runs beside the dashboard's own.

``--control`` runs the same event loop and lag monitor without a dashboard (the lag an idle
loop sees on this machine), answering ``lag`` only.

Prints ``ready PORT POOL_ID`` (``ready`` with ``--control``); then answers on stdin, one line each:
``ticket`` -> ``ticket VM_ID SECRET`` (a console ticket for ``soak-console``, as bench.proxy_server
gives), ``lag`` -> a JSON list of the lag samples (seconds) taken since the last ``lag``. At the
end of stdin it stops, removes its desktops and stops the hypervisor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import libvirt
import uvloop

from app.db.schema import hypervisors
from app.metrics.loop_lag import LoopLagMonitor
from tests.broker.desktop_lab import DesktopLab
from tests.broker.records import add_client, add_hypervisor, add_vm
from tests.dashboard import ADMIN_PASSWORD, make_settings, start_dashboard
from tests.services.guests import GuestImages
from tests.services.libvirt_host import LibvirtHost
from tests.services.rundir import RunDir
from tests.vms.world import VmWorld, clean_host, register_hypervisor

CONSOLE_VM = "soak-console"
TAG = "soak-"
LAG_INTERVAL = 0.1


def domain_xml(name: str, display_port: int) -> str:
    # The test driver keeps the graphics element as given: grants and tickets point at the display.
    return (
        f"<domain type='test'><name>{name}</name><memory>65536</memory><os><type>hvm</type></os>"
        f"<devices><graphics type='spice' port='{display_port}' autoport='no' listen='127.0.0.1'/>"
        "</devices></domain>"
    )


def define_domains(names: list[str], display_port: int) -> libvirt.virConnect:
    """Running domains on the process's shared ``test:///default`` driver (kept while the
    returned connection is open; the dashboard's own connection sees the same domains)."""
    conn = libvirt.open("test:///default")
    for name in names:
        conn.defineXML(domain_xml(name, display_port)).create()
    return conn


async def serve(args: argparse.Namespace) -> None:
    if args.control:
        # The same loop and lag monitor with no dashboard: what the machine alone costs the loop.
        await answer("ready")
        return
    conn = define_domains([CONSOLE_VM], args.display_port)
    run_dir = RunDir()
    host = LibvirtHost(run_dir, "h0")
    await asyncio.to_thread(host.start)
    settings = make_settings(
        Path(args.dir),
        Path(args.database_url_file).read_text().strip(),
        log_level="WARNING",
        # 1,000 consoles of one bench user, 200 live pages of one admin: limits lifted for them.
        console={"per_user_limit": 100_000, "global_limit": 100_000},
        server={"live_per_user_limit": 100_000, "max_connections": 8192},
    )
    dashboard = await start_dashboard(settings, admin_password=ADMIN_PASSWORD)
    lab: DesktopLab | None = None
    try:
        services = dashboard.services
        db = services.db
        # The pool's desktops: boot-sector guests on the harness's hypervisor h0, over SSH.
        h0 = await register_hypervisor(dashboard, await dashboard.admin(), host, "h0")
        lab = DesktopLab(VmWorld(dashboard, TAG, [h0], GuestImages(run_dir.sub("guests"))))
        desktops = [await lab.desktop_vm(f"{n:03d}") for n in range(args.desktops)]
        user_ids = [await add_client(db, f"soak-{n:03d}") for n in range(args.users)]
        pool_id = await lab.pool("pool", desktops, user_ids, reset_on_handout=args.reset)
        # The long-lived consoles' VM, on libvirt's test driver (its row first: the registry takes a
        # domain it finds without one for an unclassified VM).
        hv = await add_hypervisor(db, "soak-test-driver")
        await db.execute(hypervisors.update().where(hypervisors.c.id == hv).values(spice_plain=True))
        console_vm = await add_vm(db, CONSOLE_VM, hv, kind="simple", state="running")
        await services.hypervisors.reload(hv)
        await services.hypervisors.wait_for_state(hv, "up", 60)
        viewer = await add_client(db, "soak-viewer")

        async def ticket() -> str:
            issued = await services.consoles.tickets.issue(
                user_id=viewer, vm_id=console_vm, host="127.0.0.1", port=args.display_port
            )
            return f"ticket {console_vm} {issued.secret}"

        await answer(f"ready {settings.server.port} {pool_id}", ticket)
    finally:
        if lab is not None:
            await lab.aclose()
        await dashboard.stop()
        await asyncio.to_thread(clean_host, host, TAG)
        await asyncio.to_thread(host.stop)
        run_dir.cleanup()
        conn.close()


Ticket = Callable[[], Awaitable[str]]


async def answer(ready: str, ticket: Ticket | None = None) -> None:
    """Say ``ready``, then answer ``ticket`` and ``lag`` lines on stdin until it ends."""
    lag: list[float] = []
    monitor = LoopLagMonitor(lag.append, interval=LAG_INTERVAL)
    await monitor.start()
    loop = asyncio.get_running_loop()

    async def taken() -> list[float]:
        # On the loop, where the monitor appends: no sample lost between the copy and the cut.
        samples = lag[:]
        del lag[: len(samples)]
        return samples

    stopped = loop.create_future()

    def control() -> None:
        for line in sys.stdin:
            command = line.strip()
            if command == "ticket" and ticket is not None:
                print(asyncio.run_coroutine_threadsafe(ticket(), loop).result(), flush=True)
            elif command == "lag":
                samples = asyncio.run_coroutine_threadsafe(taken(), loop).result()
                print(json.dumps(samples), flush=True)
        loop.call_soon_threadsafe(stopped.set_result, None)

    print(ready, flush=True)
    threading.Thread(target=control, daemon=True).start()
    try:
        await stopped
    finally:
        await monitor.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.soak_server")
    parser.add_argument("--control", action="store_true", help="only the event loop and its lag monitor")
    parser.add_argument("--dir")
    parser.add_argument("--database-url-file")
    parser.add_argument("--display-port", type=int)
    parser.add_argument("--desktops", type=int, default=8)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument(
        "--no-reset", dest="reset", action="store_false", help="desktops go back to the pool without a reset"
    )
    args = parser.parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    logging.basicConfig(level=logging.WARNING)
    uvloop.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
