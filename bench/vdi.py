"""VDI benchmark: create + populate N VDI machines on one hypervisor, and event-to-browser latency.

Measured, not asserted. Runs a real isolated libvirtd (the test harness's h0), a
real dashboard under uvicorn and a websocket client on ``/live``; prints a table.

    .venv/bin/python -m bench.vdi [--count 50] [--cycles 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import websockets

from app.settings import VmSettings
from app.vms.records import get_vm
from tests.dashboard import BrowserLikeClient, make_settings, start_dashboard
from tests.services.guests import GuestImages
from tests.services.libvirt_host import LibvirtHost
from tests.services.rundir import RunDir
from tests.vms.conftest import attach_vm_service, detach_vm_service


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def run(count: int, cycles: int, domain_type: str) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    run_dir = RunDir()
    host = LibvirtHost(run_dir, "h0")
    await asyncio.to_thread(host.start)
    guests = GuestImages(run_dir.sub("guests"))
    tmp = Path(tempfile.mkdtemp(prefix="vdi-bench-"))
    settings = make_settings(tmp, f"sqlite:///{tmp / 'bench.sqlite3'}")
    dashboard = await start_dashboard(settings)
    vm_settings = VmSettings(
        populate_concurrency=8,
        power_concurrency=8,
        first_boot_timeout=120,
        shutdown_grace=10,
        domain_type=domain_type,  # type: ignore[arg-type]
    )
    world = await attach_vm_service(dashboard, host, guests, vm_settings)
    service = world.service
    try:
        rows.append(("hypervisor offers / domains use", f"{host.virt_type} / {domain_type}"))
        created = await service.create(
            {
                "name": "gold",
                "kind": "source",
                "hypervisor_id": world.h0.id,
                "memory_mib": 64,
                "disk_size_gib": 1,
            }
        )
        source = await get_vm(world.db, created.vm_ids[0])
        assert source is not None
        world.install_guest(world.h0, source.disk_path, "diskwriter-poweroff")
        started = time.monotonic()
        initial = await service.create_initial({"name": "init", "source_id": source.id})
        assert initial.operation_id is not None
        await service.operations.wait(initial.operation_id)
        rows.append(("copy disk (1 MiB guest)", f"{time.monotonic() - started:.2f} s"))

        started = time.monotonic()
        vdi = await service.create_vdi({"initial_id": initial.vm_ids[0], "prefix": "desk", "count": count})
        assert vdi.operation_id is not None
        op = await service.operations.wait(vdi.operation_id)
        rows.append((f"create {count} VDI machines", f"{time.monotonic() - started:.2f} s ({op.state})"))

        started = time.monotonic()
        op_id = await service.populate(initial.vm_ids[0])
        op = await service.operations.wait(op_id)
        rows.append(
            (f"populate {count} (overlays + first boots)", f"{time.monotonic() - started:.2f} s ({op.state})")
        )
        if op.error:
            rows.append(("populate error", op.error[:200]))

        # Event -> browser latency: stamp each lifecycle event as libvirt delivers it.
        stamps: dict[tuple[str, str], float] = {}
        states = {"started": "running", "stopped": "shutoff"}

        def stamp(event: Any) -> None:
            if event.state in states:
                stamps[(event.name, states[event.state])] = time.time()

        world.registry.domain_listeners.insert(0, stamp)
        client = BrowserLikeClient(dashboard.url)
        await client.login("admin", dashboard.admin_password)
        cookies = "; ".join(f"{k}={v}" for k, v in client.http.cookies.items())
        socket = await websockets.connect(
            dashboard.url.replace("http", "ws") + "/live",
            additional_headers={"Cookie": cookies},
            origin=dashboard.url,  # type: ignore[arg-type]
        )
        target = await get_vm(world.db, vdi.vm_ids[0])
        assert target is not None
        world.install_guest(world.h0, target.disk_path, "banner")
        latencies: list[float] = []

        async def receive(state: str) -> None:
            while True:
                message = json.loads(await asyncio.wait_for(socket.recv(), 60))
                data = message.get("data", {})
                if message["topic"] == "vm" and data.get("id") == target.id and data.get("state") == state:
                    latencies.append(time.time() - stamps[(target.name, state)])
                    return

        for _ in range(cycles):
            await service.power(target.id, "start")
            await receive("running")
            await service.power(target.id, "poweroff")
            await receive("shutoff")
        await socket.close()
        await client.aclose()
        ms = [value * 1000 for value in latencies]
        rows.append((f"event -> browser websocket, {len(ms)} events", f"p50 {percentile(ms, 0.5):.1f} ms"))
        rows.append(
            (
                "",
                f"p99 {percentile(ms, 0.99):.1f} ms, max {max(ms):.1f} ms, mean {statistics.mean(ms):.1f} ms",
            )
        )
    finally:
        await detach_vm_service(dashboard, world)
        await dashboard.stop()
        await asyncio.to_thread(host.stop)
        run_dir.cleanup()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--domain-type", choices=("auto", "kvm", "qemu"), default="auto")
    args = parser.parse_args()
    rows = asyncio.run(run(args.count, args.cycles, args.domain_type))
    width = max(len(name) for name, _ in rows)
    print(f"{'measure'.ljust(width)}  value")
    print(f"{'-' * width}  {'-' * 30}")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")


if __name__ == "__main__":
    main()
