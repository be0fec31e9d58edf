"""Initial machines and VDI desktops: copy disk with progress, overlays, populate, volatile, delete."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from app.live.hub import Subscription
from app.vms.errors import Invalid, Refused
from app.vms.records import children_of, get_vm, list_vms
from tests.services.guests import read_boot_counter
from tests.services.libvirt_host import LibvirtHost
from tests.vms.world import VmWorld, WorldFactory, boot_once

pytestmark = pytest.mark.kvm


def backing_of(path: Path) -> str | None:
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", str(path)], capture_output=True, text=True, check=True
        ).stdout
    )
    return info.get("full-backing-filename") or info.get("backing-filename")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def make_source(world: VmWorld, guest: str = "diskwriter-poweroff") -> int:
    created = await world.service.create(
        {
            "name": world.name("gold"),
            "kind": "source",
            "hypervisor_id": world.h0.id,
            "memory_mib": 64,
            "disk_size_gib": 1,
        }
    )
    source = await get_vm(world.db, created.vm_ids[0])
    assert source is not None
    world.install_guest(world.h0, source.disk_path, guest)
    return source.id


async def make_initial_with_children(
    world: VmWorld, count: int = 3, *, volatile: bool = False, guest: str = "diskwriter-poweroff"
) -> tuple[int, list[int]]:
    source_id = await make_source(world, guest)
    created = await world.service.create_initial({"name": world.name("init"), "source_id": source_id})
    assert created.operation_id is not None
    copy = await world.service.operations.wait(created.operation_id)
    assert copy.state == "succeeded", copy.error
    vdi = await world.service.create_vdi(
        {"initial_id": created.vm_ids[0], "prefix": world.name("desk"), "count": count, "volatile": volatile}
    )
    assert vdi.operation_id is not None
    done = await world.service.operations.wait(vdi.operation_id)
    assert done.state == "succeeded", done.error
    return created.vm_ids[0], vdi.vm_ids


async def test_the_first_version_is_copied_with_progress_to_100_and_renamed_atomically(
    vm_world: VmWorld,
) -> None:
    source_id = await make_source(vm_world)
    source = await get_vm(vm_world.db, source_id)
    assert source is not None
    subscription = vm_world.hub.subscribe(is_admin=True)
    created = await vm_world.service.create_initial({"name": vm_world.name("init"), "source_id": source_id})
    assert created.operation_id is not None
    operation = await vm_world.service.operations.wait(created.operation_id)
    assert operation.state == "succeeded", operation.error
    progress = []
    while not subscription.queue.empty():
        event = subscription.queue.get_nowait()
        if event.topic == "operation" and event.data["id"] == created.operation_id:
            progress.append((event.data["state"], event.data["progress"]))
    subscription.close()
    assert progress[-1] == ("succeeded", 100.0)
    running = [pct for state, pct in progress if state == "running"]
    assert running == sorted(running), "progress only grows"
    initial = await get_vm(vm_world.db, created.vm_ids[0])
    assert initial is not None and initial.kind == "initial" and initial.parent_id == source_id
    version = vm_world.h0.images_dir / f"{initial.name}.v1.qcow2"
    assert backing_of(version) is None, "version 1 is a standalone qcow2"
    assert not list(vm_world.h0.images_dir.glob("*.part*")), "no temporary file left"
    raw_source = subprocess.run(
        ["qemu-img", "compare", "-U", source.disk_path, str(version)], capture_output=True
    )
    assert raw_source.returncode == 0, raw_source.stdout + raw_source.stderr
    # The initial's own disk is a working overlay of it: starting the initial writes there only.
    assert backing_of(Path(initial.disk_path)) == str(version)


async def test_vdi_machines_are_overlays_of_the_initial_disk_on_its_hypervisor(vm_world: VmWorld) -> None:
    initial_id, children = await make_initial_with_children(vm_world, 3)
    initial = await get_vm(vm_world.db, initial_id)
    assert initial is not None
    names = [vm.name for vm in await children_of(vm_world.db, initial_id)]
    assert names == [vm_world.name(f"desk0{i}") for i in (1, 2, 3)]
    version = str(vm_world.h0.images_dir / f"{initial.name}.v1.qcow2")
    for child_id in children:
        child = await get_vm(vm_world.db, child_id)
        assert child is not None and child.kind == "vdi" and child.hypervisor_id == initial.hypervisor_id
        assert backing_of(Path(child.disk_path)) == version
        assert child.image_version_id == initial.target_version_id is not None
        assert child.name in vm_world.h0.host.domain_names()


async def test_a_locked_initial_refuses_publish_populate_start_and_delete(vm_world: VmWorld) -> None:
    initial_id, _ = await make_initial_with_children(vm_world, 1)
    await vm_world.service.set_flags(initial_id, {"locked": True})
    with pytest.raises(Refused, match="locked"):
        await vm_world.service.copy_disk(initial_id)
    with pytest.raises(Refused, match="locked"):
        await vm_world.service.populate(initial_id)
    with pytest.raises(Refused, match="locked"):
        await vm_world.service.power(initial_id, "start")
    with pytest.raises(Refused, match="locked"):
        await vm_world.service.plan_delete(initial_id, with_children=True, remove_disks=True)


def write_pattern(disk: Path) -> None:
    """Something written into an overlay, to see whether populate discards it."""
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 256k 4k", str(disk)], check=True, capture_output=True
    )


def has_pattern(disk: Path) -> bool:
    check = subprocess.run(
        ["qemu-io", "-r", "-U", "-f", "qcow2", "-c", "read -P 0x5a 256k 4k", str(disk)],
        capture_output=True,
        text=True,
    )
    return "Pattern verification failed" not in check.stdout + check.stderr and check.returncode == 0


async def operation_messages(subscription: Subscription, op_id: int) -> list[tuple[str, float, str]]:
    """What browsers were told about an operation: (state, progress, message) in order, to its end."""
    seen: list[tuple[str, float, str]] = []
    while True:
        event = await asyncio.wait_for(subscription.next(), 120)
        assert event is not None
        if event.topic == "operation" and event.data["id"] == op_id:
            seen.append((event.data["state"], event.data["progress"], event.data["message"]))
            if event.data["state"] in ("succeeded", "failed", "interrupted"):
                return seen


async def test_populate_recreates_the_overlays_and_is_done_once_every_child_has_started(
    vm_world: VmWorld,
) -> None:
    initial_id, children = await make_initial_with_children(vm_world, 3)
    first = await get_vm(vm_world.db, children[0])
    assert first is not None
    write_pattern(Path(first.disk_path))
    assert has_pattern(Path(first.disk_path))
    await vm_world.service.set_flags(children[2], {"maintenance": True})

    subscription = vm_world.hub.subscribe(is_admin=True)
    op_id = await vm_world.service.populate(initial_id)
    messages = await operation_messages(subscription, op_id)
    subscription.close()
    operation = await vm_world.service.operations.wait(op_id)
    assert operation.state == "succeeded", operation.error
    assert "Populated 3 of 3" in operation.message and "first boots under way" in operation.message
    progress = [pct for state, pct, _ in messages if state == "running"]
    assert progress == sorted(progress), "progress only grows"
    assert messages[-1][:2] == ("succeeded", 100.0)

    # Every child was started from its own, recreated disk: the old write is gone ...
    assert not has_pattern(Path(first.disk_path)), "the overlay was recreated from the initial"
    hv = vm_world.hv()
    for child_id in children:
        child = await get_vm(vm_world.db, child_id)
        assert child is not None and child.operation_id is None
        assert backing_of(Path(child.disk_path)) is not None
        # ... and its first boot (the guest counts, then powers itself off) ran from it.
        assert await vm_world.service.ctx.states.wait_for(
            child.hypervisor_id, child.name, {"shutoff"}, within=60, hv=hv
        )
        assert read_boot_counter(Path(child.disk_path)) == 1, f"{child.name} booted exactly once"
    # Maintenance set by the admin stays; the one populate set is lifted.
    assert [child.maintenance for child in await children_of(vm_world.db, initial_id)] == [False, False, True]
    initial = await get_vm(vm_world.db, initial_id)
    assert initial is not None and read_boot_counter(Path(initial.disk_path)) == 0


async def test_populate_can_wait_for_the_first_boots_and_shuts_down_guests_that_keep_running(
    world_factory: WorldFactory, hypervisor_host: LibvirtHost
) -> None:
    world = await world_factory([hypervisor_host], vms={"shutdown_grace": 2})
    # The banner guest never powers itself off, and ignores the ACPI power button.
    source_id = await make_source(world, guest="banner")
    created = await world.service.create_initial({"name": world.name("init"), "source_id": source_id})
    assert created.operation_id is not None
    assert (await world.service.operations.wait(created.operation_id)).state == "succeeded"
    initial_id = created.vm_ids[0]
    vdi = await world.service.create_vdi({"initial_id": initial_id, "prefix": world.name("desk"), "count": 2})
    assert vdi.operation_id is not None
    assert (await world.service.operations.wait(vdi.operation_id)).state == "succeeded"

    admin = await world.admin()
    refused = await admin.post(f"/api/v1/admin/vms/{initial_id}/populate", json={"first_boot_timeout": 2})
    assert refused.status_code == 400 and "first_boot_timeout" in refused.json()["fields"]
    answer = await admin.post(
        f"/api/v1/admin/vms/{initial_id}/populate", json={"wait_first_boot": True, "first_boot_timeout": 2}
    )
    assert answer.status_code == 202, answer.text
    op_id = answer.json()["operation"]["id"]
    operation = await world.service.operations.wait(op_id)
    assert operation.state == "succeeded", operation.error
    names = sorted(world.name(f"desk0{i}") for i in (1, 2))
    assert "Populated 2 of 2" in operation.message and "first boots finished" in operation.message
    assert f"2 still running after 2 s and shut down: {', '.join(names)}" in operation.message
    for child in await children_of(world.db, initial_id):
        assert await world.hv().domain_state(child.name) == "shutoff"
        assert not child.maintenance and child.operation_id is None


async def test_a_volatile_child_boots_from_its_own_disk_at_populate_and_volatile_from_its_next_start(
    vm_world: VmWorld,
) -> None:
    initial_id, children = await make_initial_with_children(vm_world, 1, volatile=True)
    op_id = await vm_world.service.populate(initial_id)
    assert (await vm_world.service.operations.wait(op_id)).state == "succeeded"
    child = await get_vm(vm_world.db, children[0])
    assert child is not None and child.volatile
    await vm_world.wait_state(child.id, "shutoff")
    disk = Path(child.disk_path)
    assert read_boot_counter(disk) == 1, "the first boot wrote to the VM's own disk"
    before = sha256(disk)
    await boot_once(vm_world, child.id)
    assert sha256(disk) == before and read_boot_counter(disk) == 1, "the next boot was volatile"
    assert not (vm_world.h0.volatile_dir / f"{child.name}.volatile.qcow2").exists()


async def test_volatile_desktop_leaves_its_disk_byte_identical_and_drops_the_overlay(
    vm_world: VmWorld,
) -> None:
    _, children = await make_initial_with_children(vm_world, 2)
    volatile_id, persistent_id = children
    await vm_world.service.set_flags(volatile_id, {"volatile": True})
    volatile = await get_vm(vm_world.db, volatile_id)
    persistent = await get_vm(vm_world.db, persistent_id)
    assert volatile is not None and persistent is not None
    disk = Path(volatile.disk_path)
    overlay = vm_world.h0.volatile_dir / f"{volatile.name}.volatile.qcow2"
    before = sha256(disk)
    counter_before = read_boot_counter(Path(persistent.disk_path))
    # The diskwriter guest writes its counter at boot, then powers itself off.
    await asyncio.gather(*(boot_once(vm_world, vm.id) for vm in (volatile, persistent)))
    assert sha256(disk) == before, "the volatile VM's own disk did not change"
    assert not overlay.exists(), "the per-boot overlay is removed at power-off"
    assert read_boot_counter(disk) == 0
    assert read_boot_counter(Path(persistent.disk_path)) == counter_before + 1, "the write persisted"
    # The definition keeps pointing at the (absent) overlay: started behind the dashboard's
    # back it fails instead of writing the disk.
    assert str(overlay) in vm_world.h0.host.virsh("dumpxml", volatile.name)
    await vm_world.service.set_flags(volatile_id, {"volatile": False})
    assert str(disk) in vm_world.h0.host.virsh("dumpxml", volatile.name)


async def test_vdi_machines_that_cannot_be_made_leave_no_row_domain_or_file_behind(vm_world: VmWorld) -> None:
    source_id = await make_source(vm_world)
    created = await vm_world.service.create_initial({"name": vm_world.name("init"), "source_id": source_id})
    assert created.operation_id is not None
    assert (await vm_world.service.operations.wait(created.operation_id)).state == "succeeded"
    initial = await get_vm(vm_world.db, created.vm_ids[0])
    assert initial is not None
    # The target version's file is there but no longer an image: creating overlays on it fails.
    (vm_world.h0.images_dir / f"{initial.name}.v1.qcow2").write_bytes(b"not a disk image")

    vdi = await vm_world.service.create_vdi(
        {"initial_id": initial.id, "prefix": vm_world.name("gone"), "count": 3, "volatile": False}
    )
    assert vdi.operation_id is not None
    failed = await vm_world.service.operations.wait(vdi.operation_id)
    assert failed.state == "failed" and failed.error, "the operation says it failed, and why"
    names = {vm.name for vm in await list_vms(vm_world.db)}
    assert not {vm_world.name(f"gone0{i}") for i in (1, 2, 3)} & names, "the rows are removed"
    assert not [name for name in vm_world.h0.host.domain_names() if vm_world.name("gone") in name]
    assert not list(vm_world.h0.images_dir.glob(f"{vm_world.name('gone')}*")), "no overlay file left"


async def test_delete_with_disks_removes_exactly_the_named_files(vm_world: VmWorld) -> None:
    initial_id, _ = await make_initial_with_children(vm_world, 2)
    with pytest.raises(Refused, match="VDI machines"):
        await vm_world.service.plan_delete(initial_id, with_children=False, remove_disks=True)
    plan = await vm_world.service.plan_delete(initial_id, with_children=True, remove_disks=True)
    names = [vm_world.name("desk01"), vm_world.name("desk02"), vm_world.name("init")]
    assert plan.names == names
    images = vm_world.h0.images_dir
    version = f"{vm_world.name('init')}.v1.qcow2"
    assert plan.files == [str(images / f"{name}.qcow2") for name in names] + [str(images / version)]
    before = {path.name for path in images.iterdir()}
    with pytest.raises(Invalid):
        await vm_world.service.delete(
            initial_id,
            with_children=True,
            remove_disks=True,
            confirmed_vms=names[:1],
            confirmed_files=plan.files,
        )
    _, op_id = await vm_world.service.delete(
        initial_id,
        with_children=True,
        remove_disks=True,
        confirmed_vms=plan.names,
        confirmed_files=plan.files,
    )
    assert op_id is not None
    operation = await vm_world.service.operations.wait(op_id)
    assert operation.state == "succeeded", operation.error
    after = {path.name for path in images.iterdir()}
    assert before - after == {f"{name}.qcow2" for name in names} | {version}
    assert not any(name in vm_world.h0.host.domain_names() for name in names)
    remaining = [vm.name for vm in await list_vms(vm_world.db)]
    assert remaining == [vm_world.name("gold")]


async def test_starting_all_vdi_machines_boots_each_once_and_skips_running_ones(vm_world: VmWorld) -> None:
    initial_id, children = await make_initial_with_children(vm_world, 3)
    hv = vm_world.hv()
    running = await get_vm(vm_world.db, children[0])
    assert running is not None
    vm_world.install_guest(vm_world.h0, running.disk_path, "banner")
    await vm_world.service.power(running.id, "start")
    await vm_world.wait_state(running.id, "running")

    op_id = await vm_world.service.mass_power(initial_id, "start")
    operation = await vm_world.service.operations.wait(op_id)
    assert operation.state == "succeeded", operation.error
    assert operation.message == "Start: 2 done, 1 already in that state."
    for child_id in children[1:]:
        child = await get_vm(vm_world.db, child_id)
        assert child is not None
        assert await vm_world.service.ctx.states.wait_for(hv.id, child.name, {"shutoff"}, within=60, hv=hv)
        assert read_boot_counter(Path(child.disk_path)) == 1, f"{child.name} booted once"
    assert await hv.domain_state(running.name) == "running"
    await vm_world.service.power(running.id, "poweroff")
