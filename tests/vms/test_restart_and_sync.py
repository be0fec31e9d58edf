"""Operations survive dashboard restarts honestly; domains defined elsewhere appear; two hypervisors."""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest

from app.db.schema import operations
from app.vms.records import get_vm, list_vms, vm_by_name
from tests.dashboard import DashboardFactory
from tests.services.guests import GuestImages, domain_xml
from tests.services.libvirt_host import LibvirtHost
from tests.vms.conftest import VmWorld, attach_vm_service, detach_vm_service

pytestmark = pytest.mark.kvm


async def test_a_dashboard_stop_during_a_copy_marks_it_interrupted_and_leaves_no_temp_file(
    dashboard_factory: DashboardFactory, hypervisor_host: LibvirtHost, guest_images: GuestImages
) -> None:
    dashboard = await dashboard_factory()
    world = await attach_vm_service(dashboard, hypervisor_host, guest_images)
    try:
        created = await world.service.create(
            {"name": world.name("big"), "kind": "source", "hypervisor_id": world.h0.id, "disk_size_gib": 4}
        )
        source = await get_vm(world.db, created.vm_ids[0])
        assert source is not None
        # 1.5 GiB of data makes the copy last long enough to be interrupted.
        subprocess.run(
            ["qemu-io", "-f", "qcow2", "-c", "write -P 0x33 0 1536M", source.disk_path],
            check=True,
            capture_output=True,
        )
        subscription = world.hub.subscribe(is_admin=True)
        initial = await world.service.create_initial({"name": world.name("init"), "source_id": source.id})
        op_id = initial.operation_id
        assert op_id is not None
        while True:
            event = await asyncio.wait_for(subscription.next(), 60)
            assert event is not None
            if event.topic == "operation" and event.data["id"] == op_id and event.data["progress"] >= 3:
                break
        subscription.close()
        part = world.h0.images_dir / f".{world.name('init')}.qcow2.part"
        assert part.exists(), "the copy writes under a temporary name"
        await dashboard.stop()
        row = await world.db.fetch_one(operations.select().where(operations.c.id == op_id))
        assert row is not None and row._mapping["state"] == "interrupted"
        assert "Temporary file removed" in row._mapping["message"], row._mapping["message"]
        assert not part.exists()
        assert not (world.h0.images_dir / f"{world.name('init')}.qcow2").exists(), "no half-copied disk"
    finally:
        await detach_vm_service(dashboard, world)


async def test_after_a_crash_running_operations_become_interrupted_and_their_temp_files_go(
    dashboard_factory: DashboardFactory, hypervisor_host: LibvirtHost, guest_images: GuestImages
) -> None:
    first = await dashboard_factory()
    leftover = hypervisor_host.images_dir / ".tcrash-init.qcow2.part"
    leftover.write_bytes(b"half a disk")
    await first.services.db.execute(
        operations.insert().values(
            kind="copy_disk",
            state="running",
            progress=42.0,
            message="Copying",
            params_json=json.dumps({"vm_ids": [], "_temp_files": [[1, str(leftover)]]}),
        )
    )
    await first.stop()
    # The next start finds the row still "running" (as after a crash) ...
    second = await dashboard_factory(admin_password=None)
    row = await second.services.db.fetch_one(operations.select())
    assert row is not None and row._mapping["state"] == "interrupted"
    assert "42 %" in row._mapping["message"]
    # ... and removes the temporary file once the hypervisor is reachable.
    world = await attach_vm_service(second, hypervisor_host, guest_images)
    try:
        assert world.h0.id == 1
        assert not leftover.exists()
        row = await second.services.db.fetch_one(operations.select())
        assert row is not None and "Temporary file removed" in row._mapping["message"]
    finally:
        await detach_vm_service(second, world)


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
    for _ in range(100):
        await vm_world.settle()
        found = await vm_by_name(vm_world.db, name)
        if found is not None:
            break
        await asyncio.sleep(0.05)
    assert found is not None, "the DEFINED event made the domain appear"
    assert found.kind == "unclassified" and found.memory_mib == 96 and found.disk_path == str(disk)
    classified = await vm_world.service.classify(found.id, "simple", None, actor="tester")
    assert classified.kind == "simple"
    # Undefined behind its back too: it is marked as missing, not silently dropped.
    vm_world.h0.host.virsh("undefine", name)
    for _ in range(100):
        await vm_world.settle()
        gone = await vm_by_name(vm_world.db, name)
        if gone is not None and gone.state == "missing":
            break
        await asyncio.sleep(0.05)
    assert gone is not None and gone.state == "missing"


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
    reached = await vm_world2.service.sync.wait_for(
        h1.id, on1.name, {"running"}, within=60, hv=vm_world2.registry.get(h1.id)
    )
    assert reached == "running"
    await vm_world2.service.power(on1.id, "poweroff")
    assert {vm.name for vm in await list_vms(vm_world2.db)} == {vm_world2.name("on0"), vm_world2.name("on1")}
