"""Aggregate console throughput through HAProxy with one and with two replicas.

A protocol-independent TCP "display" (bench/proxy_peers.py) streams as fast as it can;
each console is a websocket through HAProxy's console backend (balanced by its ticket) to
a replica's bridge, opened with a console ticket written to the database for that display.
With one replica the others are put in maintenance in HAProxy (stats socket).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time

import sqlalchemy as sa

from app import db as database
from app.clock import SYSTEM_CLOCK, utcnow
from app.db.schema import users, vms
from app.proxy.tickets import TicketStore
from bench.proxy_clients import Path, start_stream
from bench.proxy_lab import Lab, free_port
from tests.cluster.lab import ClusterLab

PYTHON = sys.executable
MIB = 1 << 20


async def display_vm(url: str, display_port: int) -> int:
    """A VM row standing for the display (console tickets name a VM)."""
    db = database.connect_database(url)
    await db.connect()
    try:
        hv = await db.fetch_val("SELECT id FROM hypervisors ORDER BY id LIMIT 1")
        return int(
            await db.execute(
                vms.insert().values(
                    name=f"stream-{display_port}", hypervisor_id=hv, kind="simple", created_at=utcnow()
                )
            )
        )
    finally:
        await db.disconnect()


async def tickets(url: str, vm_id: int, display_port: int, count: int) -> list[str]:
    """``count`` console tickets (60 s) of the admin for the display at 127.0.0.1:display_port."""
    db = database.connect_database(url)
    await db.connect()
    try:
        admin = int(await db.fetch_val(sa.select(users.c.id).where(users.c.username == "admin")))
        store = TicketStore(db, ttl=60, clock=SYSTEM_CLOCK)
        return [
            (await store.issue(user_id=admin, vm_id=vm_id, host="127.0.0.1", port=display_port)).secret
            for _ in range(count)
        ]
    finally:
        await db.disconnect()


def aggregate(paths: list[Path], seconds: float) -> float:
    """MiB/s received over all ``paths`` at once for ``seconds`` (each a thread, blocking sockets)."""
    totals = [0] * len(paths)
    stop = threading.Event()
    ready = threading.Barrier(len(paths) + 1)

    def read(index: int, path: Path) -> None:
        pipe = start_stream(path, warmup=8 * MIB)
        ready.wait()
        try:
            while not stop.is_set():
                totals[index] += pipe.receive(MIB)
        finally:
            pipe.close()

    threads = [threading.Thread(target=read, args=(i, p), daemon=True) for i, p in enumerate(paths)]
    for thread in threads:
        thread.start()
    ready.wait()
    before = sum(totals)
    began = time.perf_counter()
    time.sleep(seconds)
    moved = sum(totals) - before
    elapsed = time.perf_counter() - began
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    return moved / MIB / elapsed


def throughput(cluster: ClusterLab, lab: Lab, consoles: int, seconds: float) -> list[str]:
    display_port = free_port()
    lab.start("display", [PYTHON, "-m", "bench.proxy_peers", "display", str(display_port)])
    port = cluster.haproxy.port("kvmvdi_http")
    rows = [
        f"| console throughput through HAProxy ({consoles} consoles streaming at once, {seconds:g} s) "
        "| replicas | MiB/s in all |",
        "|---|---:|---:|",
    ]
    others = [replica.name for replica in cluster.replicas[1:]]
    vm_id = asyncio.run(display_vm(cluster.database_url, display_port))
    for serving in (1, 2):
        for name in others:
            state = "ready" if serving == 2 and name == others[0] else "maint"
            cluster.haproxy.command(f"set server kvmvdi_consoles/{name} state {state}")
        secrets = asyncio.run(tickets(cluster.database_url, vm_id, display_port, consoles))
        paths = [
            Path(
                f"console-{i}",
                "ws",
                port,
                ws_path=f"/console/ws/{vm_id}",
                cookie=f"kvmvdi_console={secret}",
                origin=f"http://127.0.0.1:{port}",
            )
            for i, secret in enumerate(secrets)
        ]
        rate = aggregate(paths, seconds)
        rows.append(f"| websocket bridge, tickets spread by HAProxy | {serving} | {rate:.0f} |")
    for name in others:
        cluster.haproxy.command(f"set server kvmvdi_consoles/{name} state ready")
    return rows
