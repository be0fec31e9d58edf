"""VDI benchmark: create, populate and start N VDI machines on one hypervisor; event-to-browser latency.

Measured, not asserted. Runs a real isolated libvirtd + sshd (the test harness's
h0), a real dashboard under uvicorn that manages it over SSH with a pinned host
key (registered through the admin API, exactly as in production), and a
websocket client on ``/live``; prints a table.

    .venv/bin/python -m bench.vdi [--count 50] [--cycles 20] [--domain-type auto|kvm|qemu]
                                  [--concurrency 8] [--libvirt-threads 8]

The guests are the harness's "diskwriter-poweroff" boot sector (64 MiB): it counts
its boot on its own disk and powers itself off, so "first boots finished" is the
moment every child has done its first boot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import websockets

from app.hyper import DomainEvent
from app.settings import HypervisorSettings, VmSettings
from app.vms.records import children_of, get_vm
from bench.report import report
from bench.vdi_world import bench_world
from tests.vms.world import VmWorld


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


class StopWatch:
    """Seconds from the start until every one of ``names`` reached a state (from lifecycle events)."""

    def __init__(self, world: VmWorld, names: list[str], event: str) -> None:
        self.names = set(names)
        self.event = event
        self.started = time.monotonic()
        self.done = asyncio.get_running_loop().create_future()
        self.seen: set[str] = set()
        self._remove = world.registry.add_domain_listener(self._on_event)

    def _on_event(self, event: DomainEvent) -> None:
        if event.event == self.event and event.name in self.names:
            self.seen.add(event.name)
            if self.seen == self.names and not self.done.done():
                self.done.set_result(time.monotonic() - self.started)

    async def wait(self, timeout: float = 600) -> float:
        try:
            return await asyncio.wait_for(asyncio.shield(self.done), timeout)
        finally:
            self._remove()


async def run(args: argparse.Namespace) -> list[tuple[str, str]]:
    count: int = args.count
    rows: list[tuple[str, str]] = []
    vms = {
        "populate_concurrency": args.concurrency,
        "power_concurrency": args.concurrency,
        "first_boot_timeout": 300,
        "shutdown_grace": 10,
        "domain_type": args.domain_type,
    }
    async with bench_world(vms=vms, hypervisors={"libvirt_threads": args.libvirt_threads}) as bench:
        world, h0, host, admin = bench.world, bench.h0, bench.host, bench.admin
        service = world.service
        domain_type = args.domain_type if args.domain_type != "auto" else host.virt_type
        rows.append(("hypervisor offers / domains use", f"{host.virt_type} / {domain_type}"))
        rows.append(("start concurrency / libvirt threads", f"{args.concurrency} / {args.libvirt_threads}"))
        created = await service.create(
            {"name": "gold", "kind": "source", "hypervisor_id": h0.id, "memory_mib": 64, "disk_size_gib": 1}
        )
        source = await get_vm(world.db, created.vm_ids[0])
        assert source is not None
        world.install_guest(h0, source.disk_path, "diskwriter-poweroff")
        started = time.monotonic()
        initial = await service.create_initial({"name": "init", "source_id": source.id})
        assert initial.operation_id is not None
        await service.operations.wait(initial.operation_id)
        rows.append(("publish the initial's v1 (1 MiB guest)", f"{time.monotonic() - started:.2f} s"))
        initial_id = initial.vm_ids[0]

        started = time.monotonic()
        vdi = await service.create_vdi({"initial_id": initial_id, "prefix": "desk", "count": count})
        assert vdi.operation_id is not None
        op = await service.operations.wait(vdi.operation_id)
        rows.append((f"create {count} VDI machines", f"{time.monotonic() - started:.2f} s ({op.state})"))
        names = [child.name for child in await children_of(world.db, initial_id)]

        # Populate: done when every overlay is recreated and every child started.
        booted = StopWatch(world, names, "stopped")
        started = time.monotonic()
        op_id = await service.populate(initial_id)
        op = await service.operations.wait(op_id)
        rows.append(
            (
                f"populate {count}: overlays recreated + all started",
                f"{time.monotonic() - started:.2f} s ({op.state})",
            )
        )
        if op.error:
            rows.append(("populate error", op.error[:200]))
        rows.append((f"  ... until all {count} first boots finished", f"{await booted.wait():.2f} s"))
        await world.settle()

        # The same, waiting for the first boots inside the operation.
        started = time.monotonic()
        op_id = await service.populate(initial_id, wait_first_boot=True)
        op = await service.operations.wait(op_id)
        rows.append(
            (f"populate {count}, waiting for first boots", f"{time.monotonic() - started:.2f} s ({op.state})")
        )
        await world.settle()

        # Starting every child (the normal start path, e.g. in the morning).
        running = StopWatch(world, names, "resumed")
        booted = StopWatch(world, names, "stopped")
        started = time.monotonic()
        op_id = await service.mass_power(initial_id, "start")
        op = await service.operations.wait(op_id)
        rows.append((f"start all {count} (operation)", f"{time.monotonic() - started:.2f} s ({op.state})"))
        rows.append((f"  ... until all {count} running (resumed)", f"{await running.wait():.2f} s"))
        await booted.wait()
        await world.settle()

        rows.extend(await event_latency(world, admin, vdi.vm_ids[0], args.cycles))
    return rows


async def event_latency(world: VmWorld, admin: Any, vm_id: int, cycles: int) -> list[tuple[str, str]]:
    """libvirt lifecycle event (as the hypervisor layer delivers it) -> ``vm`` message on a websocket."""
    stamps: dict[tuple[str, str], float] = {}

    def stamp(event: DomainEvent) -> None:
        if event.event in ("started", "stopped"):
            stamps[(event.name, event.state)] = time.time()

    # First: the stamp is taken before the dashboard's own listeners publish the change.
    remove = world.registry.add_domain_listener(stamp, first=True)
    dashboard = world.dashboard
    cookies = "; ".join(f"{k}={v}" for k, v in admin.http.cookies.items())
    socket = await websockets.connect(
        dashboard.url.replace("http", "ws") + "/live",
        additional_headers={"Cookie": cookies},
        origin=dashboard.url,  # type: ignore[arg-type]
    )
    target = await get_vm(world.db, vm_id)
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

    try:
        for _ in range(cycles):
            await world.service.power(target.id, "start")
            await receive("running")
            await world.service.power(target.id, "poweroff")
            await receive("shutoff")
    finally:
        await socket.close()
        remove()
    ms = [value * 1000 for value in latencies]
    return [
        (f"event -> browser websocket, {len(ms)} events", f"p50 {percentile(ms, 0.5):.1f} ms"),
        ("", f"p99 {percentile(ms, 0.99):.1f} ms, max {max(ms):.1f} ms, mean {statistics.mean(ms):.1f} ms"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--domain-type", choices=("auto", "kvm", "qemu"), default="auto")
    parser.add_argument(
        "--concurrency", type=int, default=None, help="VM starts at once (default: the setting's)"
    )
    parser.add_argument(
        "--libvirt-threads", type=int, default=None, help="libvirt calls at once per hypervisor"
    )
    args = parser.parse_args()
    if args.concurrency is None:
        args.concurrency = VmSettings().populate_concurrency
    if args.libvirt_threads is None:
        args.libvirt_threads = HypervisorSettings().libvirt_threads
    rows = asyncio.run(run(args))
    report("vdi", rows, 30)


if __name__ == "__main__":
    main()
