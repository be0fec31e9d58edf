"""Part of bench/broker.py: a user's wait from "Connect" to their desktop on screen, and the broker
API's ready answer (with a console grant), on a real hypervisor.

The harness host h0 (its own libvirtd and sshd) is registered in a real dashboard
over SSH with its pinned host key; the desktop is the banner guest under KVM; the
browser is headless Chromium logged in to the client portal. Times come from the
browser's clock: click on "Connect" -> first SPICE frame on the console canvas (the
display's first surface), and -> the banner guest's screen (see tests/broker/portal_steps.py).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from app.db.schema import leases
from tests.broker.desktop_lab import DesktopLab
from tests.broker.portal_steps import ConnectTimes, connect, portal_login
from tests.broker.records import CLIENT_PASSWORD
from tests.dashboard import make_settings, start_dashboard
from tests.services import guests
from tests.services.browser import BrowserFactory
from tests.services.guests import GuestImages
from tests.services.libvirt_host import LibvirtHost
from tests.services.rundir import RunDir
from tests.vms.world import VmWorld, clean_host, register_hypervisor

TAG = "bench-"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} | {min(values):.0f} | {max(values):.0f}"


async def release_all(lab: DesktopLab) -> None:
    for row in await lab.db.fetch_all(sa.select(leases.c.id).where(leases.c.ended_at.is_(None))):
        await lab.services.broker.leases.release(row.id, user_id=None, actor="bench")


async def running_and_shown(lab: DesktopLab, vm_id: int) -> None:
    vm = await lab.vm(vm_id)
    if await lab.world.registry.get(vm.hypervisor_id).domain_state(vm.name) != "running":
        await lab.world.service.power(vm.id, "start")
        await lab.world.wait_state(vm.id, "running")
    await lab.settled_screen(vm, guests.BLUE)


async def stopped(lab: DesktopLab, vm_id: int) -> None:
    vm = await lab.vm(vm_id)
    if await lab.world.registry.get(vm.hypervisor_id).domain_state(vm.name) != "shutoff":
        await lab.world.service.power(vm.id, "poweroff")
        await lab.world.wait_state(vm.id, "shutoff")


async def measure(database_url: str, run_dir: RunDir, rounds: int, api_requests: int) -> list[str]:
    """Markdown table rows: Connect -> screen (warm, stopped desktop) and API ready-answer latency."""
    host = LibvirtHost(run_dir, "h0")
    await asyncio.to_thread(host.start)
    browser = BrowserFactory(run_dir)
    data_dir = Path(tempfile.mkdtemp(prefix="kvmvdi-bench-broker-"))
    dashboard = await start_dashboard(make_settings(data_dir, database_url, broker={"reaper_interval": 1.0}))
    lab: DesktopLab | None = None
    virt_type = host.virt_type
    try:
        admin = await dashboard.admin()
        h0 = await register_hypervisor(dashboard, admin, host, "h0")
        lab = DesktopLab(VmWorld(dashboard, TAG, [h0], GuestImages(run_dir.sub("guests"))))
        vm = await lab.desktop_vm("desk", "banner")
        user_id, api = await lab.client("bench-user")
        pool_id = await lab.pool("bench", [vm], [user_id], reset_on_handout=False)
        driver = await asyncio.to_thread(browser.new, width=1024, height=700)
        await asyncio.to_thread(portal_login, driver, dashboard.url, "bench-user", CLIENT_PASSWORD)

        async def one_connect() -> ConnectTimes:
            await asyncio.to_thread(driver.get, dashboard.url + "/client")
            times = await asyncio.to_thread(connect, driver, pool_id, vm.id)
            await asyncio.to_thread(driver.get, "about:blank")
            await release_all(lab)  # type: ignore[union-attr]
            return times

        warm: list[ConnectTimes] = []
        cold: list[ConnectTimes] = []
        for _ in range(rounds):
            await running_and_shown(lab, vm.id)
            warm.append(await one_connect())
            await stopped(lab, vm.id)
            cold.append(await one_connect())

        # The API's ready answer for a running desktop the user holds: lease renewal, domain
        # state over SSH, a fresh SPICE password set on the domain, a console ticket, the .vv.
        await running_and_shown(lab, vm.id)
        latencies: list[float] = []
        for _ in range(api_requests):
            started = time.perf_counter()
            response = await api.request(pool_id)
            latencies.append((time.perf_counter() - started) * 1000)
            assert response.json()["status"] == "ready", response.text
        await release_all(lab)
        await asyncio.to_thread(browser.quit, driver)
    finally:
        if lab is not None:
            await lab.aclose()
        await dashboard.stop()
        await asyncio.to_thread(clean_host, host, TAG)
        browser.close()
        await asyncio.to_thread(host.stop)

    figures = [
        ("warm desktop: to the first SPICE frame", [t.first_frame_ms for t in warm]),
        ("warm desktop: to the guest's screen", [t.banner_ms for t in warm]),
        ("stopped desktop: to the first SPICE frame", [t.first_frame_ms for t in cold]),
        ("stopped desktop: to the guest's screen", [t.banner_ms for t in cold]),
    ]
    return [
        f"| Connect -> desktop on the HTML5 console, ms ({rounds} runs each; headless Chromium, "
        f"banner guest, domain type {virt_type}) | median | min | max |",
        "|---|---:|---:|---:|",
        *(f"| {label} | {summary(values)} |" for label, values in figures),
        "",
        "| broker API, desktop held and running | requests | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
        f"| ready answer with console grant (sequential) | {api_requests} | "
        f"{percentile(latencies, 0.5):.1f} | {percentile(latencies, 0.99):.1f} |",
    ]
