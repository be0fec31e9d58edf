"""The hypervisor's image filesystem runs full during a copy disk and during a populate (h2's
images directory is a 64 MiB filesystem of its own): each ends with a clear "no space" failure,
its partial files are removed, and nothing else on that filesystem is touched."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.vms.records import Vm, get_vm
from tests.faults.conftest import FAULT_SETTINGS, files_in_host, libvirt_states, partial_files
from tests.services.guests import GuestImages
from tests.services.libvirt_host import LibvirtHost
from tests.vms.world import HostInWorld, VmWorld, WorldFactory

pytestmark = pytest.mark.kvm


def as_user(host: LibvirtHost, *argv: str) -> str:
    return host.run_in_host(list(argv), user=host.ssh_user, timeout=120).stdout


def checksum(host: LibvirtHost, path: str) -> str:
    return as_user(host, "sha256sum", path).split()[0]


def free_bytes(host: LibvirtHost) -> int:
    return int(as_user(host, "df", "--output=avail", "-B1", str(host.images_dir)).split()[-1])


async def new_vm(world: VmWorld, where: HostInWorld, suffix: str, **values: object) -> Vm:
    created = await world.service.create(
        {
            "name": world.name(suffix),
            "hypervisor_id": where.id,
            "memory_mib": 64,
            "disk_size_gib": 1,
            **values,
        }
    )
    vm = await get_vm(world.db, created.vm_ids[0])
    assert vm is not None
    return vm


@pytest.fixture
async def small(world_factory: WorldFactory, small_disk_host: LibvirtHost) -> AsyncIterator[VmWorld]:
    world = await world_factory([small_disk_host], **FAULT_SETTINGS)
    yield world
    # The images live in h2's own filesystem, out of reach of the world's clean-up.
    for path in files_in_host(small_disk_host, str(small_disk_host.images_dir)):
        if path.rsplit("/", 1)[-1].lstrip(".").startswith(world.tag):
            small_disk_host.run_in_host(["rm", "-f", "--", path])


async def test_the_image_filesystem_runs_full_during_a_copy_disk(
    small: VmWorld, small_disk_host: LibvirtHost
) -> None:
    host, where = small_disk_host, small.h0
    # 36 MiB of data in the source: its copy cannot fit beside it in 64 MiB.
    source = await new_vm(small, where, "src", kind="source")
    as_user(host, "qemu-io", "-f", "qcow2", "-c", "write -P 0x42 0 36M", source.disk_path)
    bystander = await new_vm(small, where, "other")
    as_user(host, "qemu-io", "-f", "qcow2", "-c", "write -P 0x17 0 2M", bystander.disk_path)
    before = {vm.disk_path: checksum(host, vm.disk_path) for vm in (source, bystander)}
    free = free_bytes(host)

    created = await small.service.create_initial({"name": small.name("init"), "source_id": source.id})
    assert created.operation_id is not None
    operation = await small.service.operations.wait(created.operation_id)

    assert operation.state == "failed", operation
    assert operation.error.startswith(f"No space left on {where.images_dir} of hypervisor h0: "), (
        operation.error
    )
    assert partial_files(host, small.tag) == []
    initial = await get_vm(small.db, created.vm_ids[0])
    assert initial is not None
    assert initial.disk_path not in files_in_host(host, str(host.images_dir)), "no half-copied disk"
    assert {path: checksum(host, path) for path in before} == before, "the other disks are untouched"
    assert free_bytes(host) == free, "the space the copy took is free again"


async def test_the_image_filesystem_runs_full_during_a_populate(
    small: VmWorld, small_disk_host: LibvirtHost, guest_images: GuestImages
) -> None:
    host, where = small_disk_host, small.h0
    source = await new_vm(small, where, "gold", kind="source")
    as_user(host, "qemu-img", "convert", "-O", "qcow2", str(guest_images.base("banner")), source.disk_path)
    created = await small.service.create_initial({"name": small.name("init"), "source_id": source.id})
    assert created.operation_id is not None
    assert (await small.service.operations.wait(created.operation_id)).state == "succeeded"
    vdi = await small.service.create_vdi(
        {"initial_id": created.vm_ids[0], "prefix": small.name("desk"), "count": 3}
    )
    assert vdi.operation_id is not None
    assert (await small.service.operations.wait(vdi.operation_id)).state == "succeeded"
    children = [vm for vm_id in vdi.vm_ids if (vm := await get_vm(small.db, vm_id)) is not None]
    # Something else eats the space: less than a new overlay needs is left.
    filler = f"{where.images_dir}/{small.tag}filler"
    as_user(host, "fallocate", "-l", str(free_bytes(host) - 96 * 1024), filler)
    before = {path: checksum(host, path) for path in [filler, *(child.disk_path for child in children)]}

    op_id = await small.service.populate(created.vm_ids[0], actor="tester")
    operation = await small.service.operations.wait(op_id)

    assert operation.state == "failed", operation
    assert operation.error.startswith(f"No space left on {where.images_dir} of hypervisor h0: "), (
        operation.error
    )
    assert partial_files(host, small.tag) == []
    after = {path: checksum(host, path) for path in before}
    assert after[filler] == before[filler], "the filler is untouched"
    # Each child has an overlay, old or new, on the image version it runs on: none is missing
    # or half-written.
    target = (await small.service.images.state(created.vm_ids[0])).target
    assert target is not None
    for child in children:
        info = as_user(host, "qemu-img", "info", "-U", child.disk_path)
        assert f"backing file: {target.path}" in info, info
    # It stopped before any first boot: no child was started from a disk it lacked.
    assert set(libvirt_states(host, small.tag).values()) == {"shutoff"}
    for child in children:
        fresh = await get_vm(small.db, child.id)
        assert fresh is not None and fresh.maintenance, f"{child.name} stays in maintenance until populated"
