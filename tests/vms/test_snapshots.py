"""Snapshots of a persistent desktop on a real hypervisor: the diskwriter guest counts its boots on
its own disk, so reverting must bring the count back (and a snapshot with memory resumes the guest
where it was, without a boot)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.vms.records import get_vm
from tests.dashboard import BrowserLikeClient
from tests.services import guests
from tests.services.guests import read_boot_counter
from tests.services.libvirt_host import LibvirtHost
from tests.vms.world import GENEROUS, VmWorld, WorldFactory
from tests.waiting import eventually

pytestmark = pytest.mark.kvm

API = "/api/v1/admin/vms"


async def green(world: VmWorld, name: str) -> None:
    """Until the diskwriter guest's screen is green: its boot count is written."""
    hv = world.hv()

    async def green_screen() -> bool:
        screen = guests.decode_image(await hv.screenshot_png(name, max_width=720))
        return screen.fraction(guests.GREEN) >= 0.5

    await eventually(green_screen, f"{name}'s green screen", timeout=GENEROUS)


async def done(world: VmWorld, answer: Any) -> str:
    assert answer.status_code == 202, answer.text
    operation = await world.service.operations.wait(answer.json()["operation"]["id"])
    assert operation.state == "succeeded", operation.error
    return operation.message


async def listed(admin: BrowserLikeClient, vm_id: int) -> list[dict[str, Any]]:
    response = await admin.get(f"{API}/{vm_id}/snapshots")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["snapshots"]
    return found


async def test_snapshots_take_revert_and_delete_restore_what_the_guest_wrote(
    world_factory: WorldFactory, hypervisor_host: LibvirtHost
) -> None:
    # TCG: SeaBIOS boots in well under a second there (nested KVM takes seconds); three boots here.
    world = await world_factory([hypervisor_host], vms={"domain_type": "qemu"})
    admin = await world.admin()
    created = await world.service.create(
        {"name": world.name("desk"), "hypervisor_id": world.h0.id, "memory_mib": 64, "disk_size_gib": 1}
    )
    vm = await get_vm(world.db, created.vm_ids[0])
    assert vm is not None
    world.install_guest(world.h0, vm.disk_path, "diskwriter")
    disk = Path(vm.disk_path)
    snapshots = f"{API}/{vm.id}/snapshots"

    await world.service.power(vm.id, "start")
    await green(world, vm.name)
    # Taken running: with its memory.
    message = await done(
        world, await admin.post(snapshots, json={"name": "booted", "description": "first boot"})
    )
    assert message == f"Took snapshot booted of {vm.name} (disk and memory)."
    await world.service.power(vm.id, "poweroff")
    await world.wait_state(vm.id, "shutoff")
    await world.service.power(vm.id, "start")
    await green(world, vm.name)
    await world.service.power(vm.id, "poweroff")
    await world.wait_state(vm.id, "shutoff")
    assert read_boot_counter(disk) == 2
    # Taken shut off: the disk only.
    await done(world, await admin.post(snapshots, json={"name": "twice"}))
    found = await listed(admin, vm.id)
    assert [(s["name"], s["with_memory"], s["description"]) for s in found] == [
        ("booted", True, "first boot"),
        ("twice", False, ""),
    ]
    taken_again = await admin.post(snapshots, json={"name": "twice"})
    assert taken_again.status_code == 400 and "name" in taken_again.json()["fields"]
    bad = await admin.post(snapshots, json={"name": "../etc"})
    assert bad.status_code == 400 and "name" in bad.json()["fields"]

    # Back to the running snapshot: the guest resumes where it was, no boot, its disk as it was.
    await done(world, await admin.post(f"{snapshots}/booted/revert"))
    await world.wait_state(vm.id, "running")
    await green(world, vm.name)
    await world.service.power(vm.id, "poweroff")
    await world.wait_state(vm.id, "shutoff")
    assert read_boot_counter(disk) == 1, "the second boot is undone and no boot happened since"

    # Forward again, to the shut-off snapshot: stopped, with both boots on its disk.
    await done(world, await admin.post(f"{snapshots}/twice/revert"))
    assert await world.hv().domain_state(vm.name) == "shutoff"
    assert read_boot_counter(disk) == 2

    await done(world, await admin.post(f"{snapshots}/booted/delete"))
    assert [s["name"] for s in await listed(admin, vm.id)] == ["twice"]
    assert read_boot_counter(disk) == 2, "deleting a snapshot leaves the desktop as it is"
    gone = await admin.post(f"{snapshots}/booted/revert")
    assert gone.status_code == 404 and gone.json()["error"] == "not_found"

    # A volatile desktop keeps none: its changes vanish at every power-off anyway.
    await world.service.set_flags(vm.id, {"volatile": True})
    refused = await admin.post(snapshots, json={})
    assert refused.status_code == 409 and refused.json()["error"] == "snapshots_unavailable"
