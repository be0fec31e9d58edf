"""Actions on many VMs at once on the real hypervisor h0: start, force off, and delete with the
plan the admin confirmed (domains undefined, disk files removed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.vms.records import get_vm
from tests.vms.world import VmWorld

pytestmark = pytest.mark.kvm


async def test_start_force_off_and_delete_three_vms_in_one_request_each(vm_world: VmWorld) -> None:
    world = vm_world
    ids: list[int] = []
    for suffix in ("b1", "b2", "b3"):
        created = await world.service.create(
            {"name": world.name(suffix), "hypervisor_id": world.h0.id, "memory_mib": 64, "disk_size_gib": 1}
        )
        vm = await get_vm(world.db, created.vm_ids[0])
        assert vm is not None
        world.install_guest(world.h0, vm.disk_path, "banner")
        ids.append(vm.id)
    admin = await world.admin()
    operations = world.service.operations

    started = await admin.post("/api/v1/admin/vms/bulk/power", json={"vm_ids": ids, "action": "start"})
    assert started.status_code == 202, started.text
    outcome = await operations.wait(started.json()["operation"]["id"])
    assert outcome.state == "succeeded", outcome.error
    assert outcome.message == "Start: 3 done, 0 already in that state."
    for vm_id in ids:
        await world.wait_state(vm_id, "running")

    # Starting them again changes nothing, and says so.
    again = await admin.post("/api/v1/admin/vms/bulk/power", json={"vm_ids": ids, "action": "start"})
    assert (await operations.wait(again.json()["operation"]["id"])).message == (
        "Start: 0 done, 3 already in that state."
    )

    off = await admin.post("/api/v1/admin/vms/bulk/power", json={"vm_ids": ids, "action": "poweroff"})
    assert (await operations.wait(off.json()["operation"]["id"])).state == "succeeded"
    for vm_id in ids:
        await world.wait_state(vm_id, "shutoff")
    audited = await world.dashboard.services.audit.recent(action="vm_poweroff")
    assert sorted(entry["target"] for entry in audited) == sorted(world.name(s) for s in ("b1", "b2", "b3"))

    plan = (
        await admin.post("/api/v1/admin/vms/bulk/delete-plan", json={"vm_ids": ids, "remove_disks": True})
    ).json()["plan"]
    disks = [str((await get_vm(world.db, vm_id)).disk_path) for vm_id in ids]  # type: ignore[union-attr]
    assert sorted(plan["files"]) == sorted(disks) and plan["refused"] == []
    deleted = await admin.post(
        "/api/v1/admin/vms/bulk/delete",
        json={
            "vm_ids": ids,
            "remove_disks": True,
            "confirm_vms": plan["vms"],
            "confirm_files": plan["files"],
        },
    )
    assert deleted.status_code == 202, deleted.text
    assert (await operations.wait(deleted.json()["operation"]["id"])).state == "succeeded"
    assert [await get_vm(world.db, vm_id) for vm_id in ids] == [None, None, None]
    assert not any(name.startswith(world.name("b")) for name in world.h0.host.domain_names())
    assert not any(Path(disk).exists() for disk in disks)
