"""Creating simple and source VMs with real disks on a real hypervisor (over SSH, pinned host key);
power actions; CD-ROM media; maintenance refusals; state sync."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from app.vms.errors import Invalid, Refused
from app.vms.records import get_vm, list_vms, vm_by_name
from tests.vms.world import HYPERVISORS_API, VmWorld

pytestmark = pytest.mark.kvm


def qemu_info(path: Path) -> dict:
    return json.loads(
        subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", str(path)], capture_output=True, text=True, check=True
        ).stdout
    )


async def test_a_simple_vm_gets_a_real_qcow2_disk_and_a_defined_domain(vm_world: VmWorld) -> None:
    name = vm_world.name("simple")
    created = await vm_world.service.create(
        {
            "name": name,
            "hypervisor_id": vm_world.h0.id,
            "memory_mib": 128,
            "disk_size_gib": 2,
            "vcpu_sockets": 1,
            "vcpu_cores": 2,
            "iso_path": str(vm_world.h0.iso_dir / "install-a.iso"),
            "boot_order": ["cdrom", "hd"],
        }
    )
    vm = await get_vm(vm_world.db, created.vm_ids[0])
    assert vm is not None and vm.kind == "simple" and vm.state == "shutoff"
    disk = vm_world.h0.images_dir / f"{name}.qcow2"
    assert vm.disk_path == str(disk)
    info = qemu_info(disk)
    assert info["format"] == "qcow2" and info["virtual-size"] == 2 * 1024**3
    assert not list(vm_world.h0.images_dir.glob(f".{name}*.part")), "no temporary file left"
    xml = vm_world.h0.host.virsh("dumpxml", name)
    assert f"<uuid>{vm.uuid}</uuid>" in xml and "install-a.iso" in xml
    assert "cores='2'" in xml


async def test_bad_requests_name_the_field_and_create_nothing(vm_world: VmWorld) -> None:
    h0 = vm_world.h0
    cases = [
        ({"name": "bad name", "hypervisor_id": h0.id}, "name"),
        ({"name": vm_world.name("x"), "hypervisor_id": h0.id, "iso_path": "/etc/passwd"}, "iso_path"),
        ({"name": vm_world.name("y"), "hypervisor_id": h0.id, "disk_path": "/etc/y.qcow2"}, "disk_path"),
        ({"prefix": vm_world.name("b"), "count": 0, "hypervisor_id": h0.id}, "count"),
    ]
    for data, field in cases:
        with pytest.raises(Invalid) as raised:
            await vm_world.service.create(data)
        assert field in raised.value.errors, (data, raised.value.errors)
    await vm_world.service.create({"name": vm_world.name("dup"), "hypervisor_id": h0.id, "disk_size_gib": 1})
    with pytest.raises(Invalid) as raised:
        await vm_world.service.create({"name": vm_world.name("dup"), "hypervisor_id": h0.id})
    assert "name" in raised.value.errors
    assert [vm.name for vm in await list_vms(vm_world.db)] == [vm_world.name("dup")]


async def test_a_batch_creates_zero_padded_source_vms_in_one_operation(vm_world: VmWorld) -> None:
    prefix = vm_world.name("src")
    created = await vm_world.service.create(
        {"prefix": prefix, "count": 3, "kind": "source", "hypervisor_id": vm_world.h0.id, "disk_size_gib": 1}
    )
    assert created.operation_id is not None
    operation = await vm_world.service.operations.wait(created.operation_id)
    assert operation.state == "succeeded", operation.error
    names = sorted(vm.name for vm in await list_vms(vm_world.db))
    assert names == [f"{prefix}01", f"{prefix}02", f"{prefix}03"]
    for name in names:
        assert (vm_world.h0.images_dir / f"{name}.qcow2").exists()
        assert name in vm_world.h0.host.domain_names()


async def test_power_actions_change_the_state_through_lifecycle_events(vm_world: VmWorld) -> None:
    name = vm_world.name("pwr")
    created = await vm_world.service.create(
        {"name": name, "hypervisor_id": vm_world.h0.id, "memory_mib": 64, "disk_size_gib": 1}
    )
    vm_id = created.vm_ids[0]
    vm = await get_vm(vm_world.db, vm_id)
    assert vm is not None
    vm_world.install_guest(vm_world.h0, vm.disk_path, "banner")
    subscription = vm_world.hub.subscribe(is_admin=True)
    await vm_world.service.power(vm_id, "start", actor="tester")
    await vm_world.wait_state(vm_id, "running")
    with pytest.raises(Refused):
        await vm_world.service.power(vm_id, "start")
    await vm_world.service.power(vm_id, "reset")
    await vm_world.service.power(vm_id, "poweroff")
    await vm_world.wait_state(vm_id, "shutoff")
    states = []
    while not subscription.queue.empty():
        event = subscription.queue.get_nowait()
        if event.topic == "vm" and event.data.get("id") == vm_id and event.data.get("change") == "state":
            states.append(event.data["state"])
    subscription.close()
    assert states[:1] == ["running"] and states[-1] == "shutoff", states
    stored = await vm_by_name(vm_world.db, name)
    assert stored is not None and stored.state == "shutoff" and stored.state_changed_at is not None


async def test_domains_use_kvm_when_the_hypervisor_offers_it(vm_world: VmWorld) -> None:
    name = vm_world.name("kvm")
    await vm_world.service.create({"name": name, "hypervisor_id": vm_world.h0.id, "disk_size_gib": 1})
    expected = "kvm" if vm_world.h0.host.virt_type == "kvm" else "qemu"
    assert f"<domain type='{expected}'" in vm_world.h0.host.virsh("dumpxml", name)


async def test_the_cdrom_medium_changes_in_the_definition_and_in_the_running_guest(vm_world: VmWorld) -> None:
    name = vm_world.name("media")
    admin = await vm_world.admin()
    created = await admin.post(
        "/api/v1/admin/vms",
        json={"name": name, "hypervisor_id": vm_world.h0.id, "memory_mib": 64, "disk_size_gib": 1},
    )
    assert created.status_code == 201, created.text
    vm_id = created.json()["vms"][0]["id"]
    isos = (await admin.get(f"/api/v1/admin/hypervisors/{vm_world.h0.id}/isos")).json()["isos"]
    assert [(iso["name"], iso["size"]) for iso in isos] == [("install-a.iso", 2048), ("tools-b.iso", 2048)]
    install, tools = (iso["path"] for iso in isos)

    answer = await admin.post(f"/api/v1/admin/vms/{vm_id}/media", json={"iso_path": install})
    assert answer.status_code == 200 and answer.json()["vm"]["iso_path"] == install
    assert install in vm_world.h0.host.virsh("dumpxml", "--inactive", name)

    vm = await get_vm(vm_world.db, vm_id)
    assert vm is not None
    vm_world.install_guest(vm_world.h0, vm.disk_path, "banner")
    await vm_world.service.power(vm_id, "start")
    await vm_world.wait_state(vm_id, "running")
    answer = await admin.post(f"/api/v1/admin/vms/{vm_id}/media", json={"iso_path": tools})
    assert answer.status_code == 200
    assert tools in vm_world.h0.host.virsh("dumpxml", name), "the running guest sees the new medium"
    assert tools in vm_world.h0.host.virsh("dumpxml", "--inactive", name), "and keeps it for its next boot"
    answer = await admin.post(f"/api/v1/admin/vms/{vm_id}/media", json={"iso_path": None})
    assert answer.status_code == 200 and answer.json()["vm"]["iso_path"] is None
    assert ".iso" not in vm_world.h0.host.virsh("dumpxml", name)

    refused = await admin.post(f"/api/v1/admin/vms/{vm_id}/media", json={"iso_path": "/etc/passwd"})
    assert refused.status_code == 400 and "iso_path" in refused.json()["fields"]
    await vm_world.service.power(vm_id, "poweroff")


async def test_a_hypervisor_in_maintenance_refuses_new_work_but_lets_vms_stop(vm_world: VmWorld) -> None:
    name = vm_world.name("drain")
    created = await vm_world.service.create(
        {"name": name, "hypervisor_id": vm_world.h0.id, "memory_mib": 64, "disk_size_gib": 1}
    )
    vm_id = created.vm_ids[0]
    vm = await get_vm(vm_world.db, vm_id)
    assert vm is not None
    vm_world.install_guest(vm_world.h0, vm.disk_path, "banner")
    await vm_world.service.power(vm_id, "start")
    await vm_world.wait_state(vm_id, "running")
    admin = await vm_world.admin()
    patched = await admin.http.patch(
        f"{HYPERVISORS_API}/{vm_world.h0.id}",
        json={"maintenance": True},
        headers={"X-CSRF-Token": admin.csrf or ""},
    )
    assert patched.status_code == 200, patched.text
    assert not vm_world.registry.find(vm_world.h0.id).accepting_work  # type: ignore[union-attr]

    refused = await admin.post(
        "/api/v1/admin/vms", json={"name": vm_world.name("new"), "hypervisor_id": vm_world.h0.id}
    )
    assert refused.status_code == 409 and refused.json()["error"] == "hypervisor_maintenance"
    assert "maintenance" in refused.json()["message"]
    # Draining works: the running VM can be stopped.
    stopped = await admin.post(f"/api/v1/admin/vms/{vm_id}/power", json={"action": "poweroff"})
    assert stopped.status_code == 202, stopped.text
    await vm_world.wait_state(vm_id, "shutoff")
    again = await admin.post(f"/api/v1/admin/vms/{vm_id}/power", json={"action": "start"})
    assert again.status_code == 409 and again.json()["error"] == "hypervisor_maintenance"
    assert [vm.name for vm in await list_vms(vm_world.db)] == [name]


async def test_start_resumes_a_paused_vm(vm_world: VmWorld) -> None:
    name = vm_world.name("pause")
    created = await vm_world.service.create(
        {"name": name, "hypervisor_id": vm_world.h0.id, "memory_mib": 64, "disk_size_gib": 1}
    )
    vm_id = created.vm_ids[0]
    vm = await get_vm(vm_world.db, vm_id)
    assert vm is not None
    vm_world.install_guest(vm_world.h0, vm.disk_path, "banner")
    await vm_world.service.power(vm_id, "start")
    await vm_world.wait_state(vm_id, "running")
    vm_world.h0.host.virsh("suspend", name)
    await vm_world.wait_state(vm_id, "paused")
    await vm_world.service.power(vm_id, "start")
    await vm_world.wait_state(vm_id, "running")
    with pytest.raises(Refused, match="already running"):
        await vm_world.service.power(vm_id, "start")
    await vm_world.service.power(vm_id, "poweroff")
