"""Pool schedules on the real hypervisor h0: a keep-ready window opening starts the pool's free
desktops, and a nightly power-off stops the free ones and leaves the one a user holds running.
The dashboard's clock is moved to each start; nothing waits for a time of day."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest

from tests.broker.desktop_lab import LAB_SETTINGS, ApiClient, DesktopLab, iso_dirs_kept
from tests.broker.records import CLIENT_PASSWORD
from tests.services.libvirt_host import LibvirtHost
from tests.vms.conftest import WorldFactory

pytestmark = pytest.mark.kvm


# Boot-sector guests ignore the ACPI button: the power-off forces them off after this grace.
GRACE = 3


@pytest.fixture
async def lab(world_factory: WorldFactory, hypervisor_host: LibvirtHost) -> AsyncIterator[DesktopLab]:
    """The broker tests' lab (desktops on h0) with a short shutdown grace."""
    with iso_dirs_kept([hypervisor_host]):
        world = await world_factory([hypervisor_host], **LAB_SETTINGS, vms={"shutdown_grace": GRACE})
        lab = DesktopLab(world)
        yield lab
        await lab.aclose()


def jump_to(lab: DesktopLab, moment: datetime) -> None:
    clock = lab.world.dashboard.clock
    clock.advance((moment - clock.now()).total_seconds())


async def test_a_window_starts_desktops_and_the_nightly_power_off_leaves_held_ones_alone(
    lab: DesktopLab,
) -> None:
    await lab.services.schedules.stop()  # its own loop stopped: the test moves the clock and looks itself
    desktops = [await lab.desktop_vm(f"sched{number}") for number in (1, 2, 3)]
    user_id, _ = await lab.client("ann")
    # Leases outlive the clock's jumps: only the schedules decide here.
    pool_id = await lab.pool("sched", desktops, [user_id], lease_timeout_min=7 * 24 * 60)
    admin = await lab.world.admin()
    now = lab.world.dashboard.clock.now()
    opens, closes, night = now + timedelta(hours=2), now + timedelta(hours=3), now + timedelta(hours=4)
    every_day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    path = f"/api/v1/admin/pools/{pool_id}/schedules"
    window = await admin.post(
        path,
        json={
            "kind": "keep_ready",
            "days": every_day,
            "at": opens.strftime("%H:%M"),
            "until": closes.strftime("%H:%M"),
            "count": 2,
        },
    )
    assert window.status_code == 201, window.text
    power_off = await admin.post(
        path, json={"kind": "power_off", "days": every_day, "at": night.strftime("%H:%M")}
    )
    assert power_off.status_code == 201, power_off.text
    runner = lab.services.schedules

    # Before the window opens nothing runs.
    await runner.tick()
    assert {(await lab.vm(vm.id)).state for vm in desktops} == {"shutoff"}

    jump_to(lab, opens.replace(second=30))
    await runner.tick()
    admin = await lab.world.admin()  # the clock moved past the first session's idle limit
    for vm in desktops[:2]:
        await lab.world.wait_state(vm.id, "running")
    assert (await lab.vm(desktops[2].id)).state == "shutoff", "two are kept started, not three"
    listed = {s["kind"]: s for s in (await admin.get(path)).json()["schedules"]}
    assert listed["keep_ready"]["last_run"]["status"] == "ok"
    assert listed["keep_ready"]["last_run"]["result"] == "2 of 2 free desktops started (2 just now)"
    assert listed["keep_ready"]["window_open"] is True

    # Ann (logged in again: the clock moved past her token's life) takes one of the started desktops.
    login = await lab.http.post("/api/v1/login", json={"username": "ann", "password": CLIENT_PASSWORD})
    assert login.status_code == 200, login.text
    _, desktop = await ApiClient(lab.http, login.json()["token"]).ready(pool_id)
    held = desktop.vm_id
    free = next(vm.id for vm in desktops[:2] if vm.id != held)

    running_free = [vm.id for vm in desktops if vm.id != held and (await lab.vm(vm.id)).state == "running"]
    assert free in running_free

    jump_to(lab, night.replace(second=30))
    await runner.tick()
    admin = await lab.world.admin()
    for vm_id in running_free:
        await lab.world.wait_state(vm_id, "shutoff")
    assert await lab.world.registry.get(lab.world.h0.id).domain_state((await lab.vm(held)).name) == "running"
    assert (await lab.vm(held)).assigned_user_id == user_id
    listed = {s["kind"]: s for s in (await admin.get(path)).json()["schedules"]}
    assert listed["power_off"]["last_run"]["status"] == "ok"
    plural = "s" if len(running_free) != 1 else ""
    assert listed["power_off"]["last_run"]["result"] == (
        f"shut down {len(running_free)} free desktop{plural} ({len(running_free)} forced off: no answer"
        f" to the shutdown within {GRACE} s); 1 held by users left alone"
    )
