"""The VDI benchmarks' set-up: the harness hypervisor h0 (an isolated libvirtd + sshd) and a
real dashboard under uvicorn managing it over SSH with a pinned host key, registered through
the admin API exactly as in production; everything is stopped and removed afterwards."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.dashboard import make_settings, start_dashboard
from tests.services.guests import GuestImages
from tests.services.libvirt_host import LibvirtHost
from tests.services.rundir import RunDir
from tests.vms.world import HostInWorld, VmWorld, clean_host, register_hypervisor


@dataclass
class BenchWorld:
    world: VmWorld
    h0: HostInWorld
    host: LibvirtHost
    admin: Any


@asynccontextmanager
async def bench_world(**settings: Any) -> AsyncIterator[BenchWorld]:
    """``settings``: dashboard setting sections (``vms={...}``, ``hypervisors={...}``)."""
    run_dir = RunDir()
    host = LibvirtHost(run_dir, "h0")
    await asyncio.to_thread(host.start)
    guests = GuestImages(run_dir.sub("guests"))
    tmp = Path(tempfile.mkdtemp(prefix="vdi-bench-"))
    dashboard = await start_dashboard(make_settings(tmp, f"sqlite:///{tmp / 'bench.sqlite3'}", **settings))
    try:
        admin = await dashboard.admin()
        h0 = await register_hypervisor(dashboard, admin, host, "h0")
        yield BenchWorld(VmWorld(dashboard, "", [h0], guests), h0, host, admin)
    finally:
        await dashboard.stop()
        await asyncio.to_thread(clean_host, host, "")
        await asyncio.to_thread(host.stop)
        run_dir.cleanup()
