"""Operations survive dashboard restarts honestly; the table follows what the hypervisors run,
including what happened while the connection was away; two hypervisors."""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest
from databases import Database

from app.db.schema import image_versions, operations
from app.vms.records import Vm, get_vm, list_vms, vm_by_name
from tests.services.guests import domain_xml
from tests.services.libvirt_host import LibvirtHost
from tests.vms.world import GENEROUS, VmWorld, WorldFactory, register_hypervisor
from tests.waiting import eventually

pytestmark = pytest.mark.kvm


async def test_a_dashboard_stop_during_a_publication_marks_it_interrupted_and_leaves_no_file(
    world_factory: WorldFactory, hypervisor_host: LibvirtHost, outside_db: Database
) -> None:
    world = await world_factory([hypervisor_host])
    created = await world.service.create(
        {"name": world.name("big"), "kind": "source", "hypervisor_id": world.h0.id, "disk_size_gib": 4}
    )
    source = await get_vm(world.db, created.vm_ids[0])
    assert source is not None
    # 1.5 GiB of data makes the copy last long enough to be interrupted. Written off the event
    # loop: on a loaded machine it takes long enough for the dashboard's hypervisor connection,
    # whose keepalives run on that loop, to be dropped as dead.
    await asyncio.to_thread(
        subprocess.run,
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0x33 0 1536M", source.disk_path],
        check=True,
        capture_output=True,
    )
    subscription = world.hub.subscribe(is_admin=True)
    initial = await world.service.create_initial({"name": world.name("init"), "source_id": source.id})
    op_id = initial.operation_id
    assert op_id is not None
    while True:
        event = await asyncio.wait_for(subscription.next(), GENEROUS)
        assert event is not None
        if event.topic == "operation" and event.data["id"] == op_id and event.data["progress"] >= 3:
            break
    subscription.close()
    version = world.h0.images_dir / f"{world.name('init')}.v1.qcow2"
    part = version.with_name(f"{version.name}.part-op{op_id}")
    assert part.exists(), "the copy writes under a temporary name"
    await world.dashboard.stop()
    row = await outside_db.fetch_one(operations.select().where(operations.c.id == op_id))
    assert row is not None and row._mapping["state"] == "interrupted"
    assert "Temporary file removed" in row._mapping["message"], row._mapping["message"]
    assert not part.exists()
    assert not version.exists(), "no half-copied version under the real name"
    assert not (world.h0.images_dir / f"{world.name('init')}.qcow2").exists(), "nor a working disk on it"
    assert await outside_db.fetch_all(image_versions.select()) == [], "no version row either"


async def test_after_a_crash_running_operations_become_interrupted_and_their_temp_files_go(
    world_factory: WorldFactory, hypervisor_host: LibvirtHost, outside_db: Database
) -> None:
    first = await world_factory([])
    leftover = hypervisor_host.images_dir / f"{first.tag}crash-init.qcow2.part-op1"
    leftover.write_bytes(b"half a disk")
    await first.db.execute(
        operations.insert().values(
            kind="copy_disk",
            state="running",
            progress=42.0,
            message="Copying",
            params_json=json.dumps({"vm_ids": [], "_temp_files": [[1, str(leftover)]]}),
        )
    )
    await first.dashboard.stop()
    # The next start finds the row still "running" (as after a crash) ...
    second = await world_factory([], admin_password=None)
    row = await outside_db.fetch_one(operations.select())
    assert row is not None and row._mapping["state"] == "interrupted"
    assert "42 %" in row._mapping["message"]
    assert leftover.exists(), "no hypervisor yet: the file waits"
    # ... and removes the temporary file once its hypervisor (id 1) is registered and up.
    second.dashboard.admin_password = first.dashboard.admin_password
    h0 = await register_hypervisor(second.dashboard, await second.admin(), hypervisor_host, "h0")
    assert h0.id == 1
    await eventually(lambda: not leftover.exists(), "the temporary file removed", timeout=GENEROUS)
    await second.settle()
    row = await outside_db.fetch_one(operations.select())
    assert row is not None and "Temporary file removed" in row._mapping["message"]


async def test_a_domain_defined_behind_the_dashboards_back_appears_unclassified_and_can_be_classified(
    vm_world: VmWorld,
) -> None:
    name = vm_world.name("rogue")
    disk = vm_world.h0.images_dir / f"{name}.qcow2"
    vm_world.guests.overlay("banner", disk)
    xml = domain_xml(name, disk, virt_type="qemu", memory_mib=96)
    path = vm_world.h0.host.dir / f"{name}.xml"
    path.write_text(xml)
    vm_world.h0.host.virsh("define", str(path))

    async def adopted() -> Vm | None:
        await vm_world.settle()
        return await vm_by_name(vm_world.db, name)

    found = await eventually(adopted, f"{name} adopted", timeout=GENEROUS)
    assert found is not None
    assert found.kind == "unclassified" and found.memory_mib == 96 and found.disk_path == str(disk)
    classified = await vm_world.service.classify(found.id, "simple", None, actor="tester")
    assert classified.kind == "simple"
    # Undefined behind its back too: it is marked as missing, not silently dropped.
    vm_world.h0.host.virsh("undefine", name)

    async def missing() -> bool:
        await vm_world.settle()
        gone = await vm_by_name(vm_world.db, name)
        return gone is not None and gone.state == "missing"

    await eventually(missing, f"{name} marked missing", timeout=GENEROUS)


async def test_what_happened_while_the_connection_was_away_is_read_again_after_reconnecting(
    world_factory: WorldFactory, hypervisor_host: LibvirtHost
) -> None:
    # fence_after far above the SSH restart: the hypervisor never counts as down.
    world = await world_factory([hypervisor_host], hypervisors={"fence_after": GENEROUS})
    name = world.name("away")
    created = await world.service.create(
        {"name": name, "hypervisor_id": world.h0.id, "memory_mib": 64, "disk_size_gib": 1}
    )
    vm_id = created.vm_ids[0]
    vm = await get_vm(world.db, vm_id)
    assert vm is not None
    world.install_guest(world.h0, vm.disk_path, "banner")
    await world.service.power(vm_id, "start")
    await world.wait_state(vm_id, "running")
    hv = world.hv()
    connections = hv.connections

    # The SSH sessions die; meanwhile the VM is stopped on the host: no event reaches the dashboard.
    await asyncio.to_thread(hypervisor_host.stop_sshd)
    try:
        hypervisor_host.virsh("destroy", name)
    finally:
        await asyncio.to_thread(hypervisor_host.start_sshd)
    await eventually(
        lambda: hv.connections != connections and hv.connected, "the connection made again", timeout=GENEROUS
    )
    await world.wait_state(vm_id, "shutoff")
    assert hv.state == "up" and world.registry.get(world.h0.id) is hv


async def test_vms_are_placed_on_the_hypervisor_asked_for(vm_world2: VmWorld) -> None:
    h0, h1 = vm_world2.hosts
    for where, suffix in ((h0, "on0"), (h1, "on1")):
        await vm_world2.service.create(
            {"name": vm_world2.name(suffix), "hypervisor_id": where.id, "disk_size_gib": 1, "memory_mib": 64}
        )
    assert vm_world2.name("on0") in h0.host.domain_names()
    assert vm_world2.name("on0") not in h1.host.domain_names()
    assert vm_world2.name("on1") in h1.host.domain_names()
    on1 = await vm_by_name(vm_world2.db, vm_world2.name("on1"))
    assert on1 is not None and on1.hypervisor_id == h1.id
    assert f"address='{h1.host.spice_listen}'" in h1.host.virsh("dumpxml", on1.name)
    vm_world2.install_guest(h1, on1.disk_path, "banner")
    await vm_world2.service.power(on1.id, "start")
    await vm_world2.wait_state(on1.id, "running")
    await vm_world2.service.power(on1.id, "poweroff")
    await vm_world2.wait_state(on1.id, "shutoff")
    assert {vm.name for vm in await list_vms(vm_world2.db)} == {vm_world2.name("on0"), vm_world2.name("on1")}
