"""Publishing a new image version from a running initial machine: a point-in-time copy of its disk
while it keeps running, and its VDI machines move onto it."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from databases import Database

from app.db.schema import image_versions, operations
from app.vms.records import children_of, get_vm
from tests.services.guests import read_boot_counter
from tests.vms.test_image_versions import API, domain_id, finished, image
from tests.vms.test_initial_vdi import (
    backing_of,
    has_pattern,
    make_initial_with_children,
    make_source,
    write_pattern,
)
from tests.vms.test_snapshots import green
from tests.vms.world import GENEROUS, VmWorld

pytestmark = pytest.mark.kvm


async def test_a_running_initial_publishes_its_disk_as_it_is_and_keeps_running(vm_world: VmWorld) -> None:
    world, images = vm_world, vm_world.h0.images_dir
    admin = await world.admin()
    # The diskwriter guest keeps running after it counted its boot.
    initial_id, _ = await make_initial_with_children(world, 1, guest="diskwriter")
    (child,) = await children_of(world.db, initial_id)
    initial = await get_vm(world.db, initial_id)
    assert initial is not None
    url = f"{API}/{initial_id}/versions/from-running"
    stopped = await admin.post(url, json={})
    assert stopped.status_code == 409 and stopped.json()["error"] == "not_running", stopped.text

    # The admin's edit: some of it written before this start, some by the running guest itself
    # (the diskwriter counts its boot on its disk, then shows green).
    write_pattern(Path(initial.disk_path))
    await world.service.power(initial_id, "start")
    await world.wait_state(initial_id, "running")
    await green(world, initial.name)
    boot = await domain_id(world, initial.name)
    panel = await admin.get(f"/vms/{initial_id}/versions/panel")
    assert 'data-running="yes"' in panel.text, "the page offers publishing the running machine"
    v1, v2 = images / f"{world.name('init')}.v1.qcow2", images / f"{world.name('init')}.v2.qcow2"

    message = await finished(world, await admin.post(url, json={"note": "updates installed"}))
    assert message.startswith(f"Published v2 of {initial.name} from its running disk"), message
    assert "crash-consistent" in message, "the boot-sector guest has no agent to freeze its file systems"
    assert backing_of(v2) is None and has_pattern(v2), "v2 is a standalone copy with the edit in it"
    assert read_boot_counter(v2) == 1, "with what the running guest wrote"
    assert read_boot_counter(v1) == 0 and not has_pattern(v1), "v1 was not written"
    assert not list(images.glob("*.part-*")), "nothing left under a temporary name"
    assert await domain_id(world, initial.name) == boot, "the same QEMU process: never stopped"
    assert (await asyncio.to_thread(world.h0.host.virsh, "domstate", initial.name)).strip() == "running"
    assert backing_of(Path(initial.disk_path)) == str(v1), "its working disk, in use, was left as it was"
    state = await image(admin, initial_id)
    assert state["target"] == "v2" and state["rollout"] == {"on_target": 0, "total": 1}
    note = state["versions"][-1]["note"]
    assert note.startswith("updates installed (crash-consistent copy of the running machine"), note

    moved = await finished(world, await admin.post(f"{API}/{initial_id}/versions/rollout"))
    assert moved.startswith("Moved 1 VDI machine of"), moved
    assert backing_of(Path(child.disk_path)) == str(v2) and has_pattern(Path(child.disk_path))
    await world.service.power(initial_id, "poweroff")


async def test_a_dashboard_stop_during_a_running_publication_stops_the_copy_and_leaves_no_file(
    vm_world: VmWorld, outside_db: Database
) -> None:
    world, images = vm_world, vm_world.h0.images_dir
    source_id = await make_source(world, "banner")
    made = await world.service.create_initial({"name": world.name("init"), "source_id": source_id})
    assert made.operation_id is not None
    assert (await world.service.operations.wait(made.operation_id)).state == "succeeded"
    initial = await get_vm(world.db, made.vm_ids[0])
    assert initial is not None
    # 1 GiB the admin's edit wrote (on a disk grown for it) makes the copy last long enough to be
    # stopped. Written off the event loop, which keeps the hypervisor connection alive.
    for argv in (
        ["qemu-img", "resize", "-q", "-f", "qcow2", initial.disk_path, "2G"],
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0x33 64M 1024M", initial.disk_path],
    ):
        await asyncio.to_thread(subprocess.run, argv, check=True, capture_output=True)
    await world.service.power(initial.id, "start")
    await world.wait_state(initial.id, "running")
    boot = await domain_id(world, initial.name)

    subscription = world.hub.subscribe(is_admin=True)
    op_id = await world.service.images.publish_running(initial.id)
    while True:
        event = await asyncio.wait_for(subscription.next(), GENEROUS)
        assert event is not None
        if event.topic == "operation" and event.data["id"] == op_id and event.data["progress"] >= 1:
            assert event.data["state"] == "running", event.data
            break
    subscription.close()
    version = images / f"{world.name('init')}.v2.qcow2"
    part = version.with_name(f"{version.name}.part-op{op_id}")
    assert part.exists(), "the copy writes under a temporary name"
    await world.dashboard.stop()

    row = await outside_db.fetch_one(operations.select().where(operations.c.id == op_id))
    assert row is not None
    assert row._mapping["state"] == "interrupted", row._mapping["message"]
    assert "Temporary file removed" in row._mapping["message"], row._mapping["message"]
    assert not part.exists() and not version.exists(), "no half-copied version under either name"
    jobs = await asyncio.to_thread(world.h0.host.virsh, "domjobinfo", initial.name)
    assert "None" in jobs, f"the backup job was stopped, not left writing: {jobs}"
    assert await domain_id(world, initial.name) == boot, "the initial runs on, never stopped"
    versions = image_versions.select().where(image_versions.c.initial_id == initial.id)
    rows = await outside_db.fetch_all(versions)
    assert [r._mapping["number"] for r in rows] == [1], "no version row for v2"
    await asyncio.to_thread(world.h0.host.virsh, "destroy", initial.name)
