"""A new VM on a disk image that already lies in the hypervisor's images directory: used in place in
its own format, or copied to a standalone qcow2; and refused when it could reach outside that
directory or is someone else's disk. Real hypervisor h0 over SSH, real qemu-img, real guests."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from app.vms.records import get_vm
from tests.services.guests import read_boot_counter
from tests.vms.world import VmWorld, boot_once

pytestmark = pytest.mark.kvm

VMS_API = "/api/v1/admin/vms"
GUEST = "diskwriter-poweroff"  # counts its boots on its disk and powers off


def qemu_info(path: Path) -> dict[str, object]:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(path)], capture_output=True, text=True, check=True
    ).stdout
    info = json.loads(out)
    assert isinstance(info, dict)
    return info


def place_image(world: VmWorld, path: Path, kind: str, image_format: str) -> Path:
    """A standalone image of guest ``kind`` in ``image_format``, owned like the hypervisor's own files."""
    subprocess.run(
        ["qemu-img", "convert", "-q", "-O", image_format, str(world.guests.base(kind)), str(path)], check=True
    )
    shutil.chown(path, world.h0.host.ssh_user, "libvirt")
    path.chmod(0o664)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def new_vm(world: VmWorld, name: str, **fields: object) -> dict[str, object]:
    return {"name": name, "hypervisor_id": world.h0.id, "memory_mib": 64, **fields}


async def test_a_raw_image_becomes_a_new_vms_disk_in_place_and_a_copy_leaves_it_untouched(
    vm_world: VmWorld,
) -> None:
    world = vm_world
    admin = await world.admin()
    image = place_image(world, world.h0.images_dir / f"{world.name('old')}.img", GUEST, "raw")

    listed = (await admin.get(f"/api/v1/admin/hypervisors/{world.h0.id}/images")).json()["images"]
    offered = {item["path"]: item for item in listed}
    assert offered[str(image)]["format"] == "raw" and offered[str(image)]["importable"] is True

    # In place: the VM's disk is the image itself, in its own format.
    name = world.name("inplace")
    answer = await admin.post(VMS_API, json=new_vm(world, name, import_path=str(image)))
    assert answer.status_code == 201, answer.text
    vm = await get_vm(world.db, answer.json()["vms"][0]["id"])
    assert vm is not None
    assert (vm.disk_path, vm.disk_format, vm.disk_imported) == (str(image), "raw", True)
    assert vm.disk_size_gib == 1, "the size is the image's, rounded up to a GiB"
    xml = world.h0.host.virsh("dumpxml", name)
    assert "type='raw'" in xml and f"file='{image}'" in xml
    await boot_once(world, vm.id)
    assert read_boot_counter(image) == 1, "the guest booted from the raw image and wrote to it"
    # Volatile, it boots from a throw-away qcow2 overlay of the raw image, which keeps its count.
    await world.service.set_flags(vm.id, {"volatile": True})
    await boot_once(world, vm.id)
    assert read_boot_counter(image) == 1, "the volatile boot wrote to its overlay only"
    await world.service.set_flags(vm.id, {"volatile": False})
    assert "type='raw'" in world.h0.host.virsh("dumpxml", "--inactive", name), "back on the raw image"
    listed = (await admin.get(f"/api/v1/admin/hypervisors/{world.h0.id}/images")).json()["images"]
    assert {item["path"]: item for item in listed}[str(image)]["disk_of"] == name

    # A copy: another image becomes a new standalone qcow2; the image is left as it was.
    original = place_image(world, world.h0.images_dir / f"{world.name('gold')}.img", GUEST, "raw")
    before = digest(original)
    copied = world.name("copied")
    answer = await admin.post(
        VMS_API, json=new_vm(world, copied, import_path=str(original), import_copy=True)
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["operation"] is not None, "copying is an operation with progress"
    operation = await world.service.operations.wait(answer.json()["operation"]["id"])
    assert operation.state == "succeeded", operation.error
    vm = await get_vm(world.db, answer.json()["vms"][0]["id"])
    assert vm is not None
    disk = world.h0.images_dir / f"{copied}.qcow2"
    assert (vm.disk_path, vm.disk_format, vm.disk_imported) == (str(disk), "qcow2", False)
    info = qemu_info(disk)
    assert info["format"] == "qcow2" and "backing-filename" not in info, "a standalone copy"
    assert not list(world.h0.images_dir.glob(f".{copied}*")), "no temporary file left"
    await boot_once(world, vm.id)
    assert read_boot_counter(disk) == 1 and read_boot_counter(original) == 0
    assert digest(original) == before, "the imported image is untouched"


async def test_an_import_that_could_reach_outside_the_images_directory_or_share_a_disk_is_refused(
    vm_world: VmWorld,
) -> None:
    world = vm_world
    admin = await world.admin()
    images = world.h0.images_dir
    escape = images / f"{world.name('link')}.img"
    os.symlink("/etc/hostname", escape)
    chained = images / f"{world.name('chained')}.qcow2"
    world.guests.overlay("banner", chained)  # its backing file lies in the guests' own directory
    shutil.chown(chained, world.h0.host.ssh_user, "libvirt")
    held = place_image(world, images / f"{world.name('held')}.qcow2", "banner", "qcow2")
    answer = await admin.post(VMS_API, json=new_vm(world, world.name("holder"), import_path=str(held)))
    assert answer.status_code == 201, answer.text
    holder_id = answer.json()["vms"][0]["id"]
    await world.service.power(holder_id, "start")
    await world.wait_state(holder_id, "running")

    cases = [
        ("/etc/passwd", "choose an image in"),
        (f"{images}/../../etc/passwd", "choose an image in"),
        (str(images / "no-such.img"), "no such file"),
        (str(escape), "leads outside"),
        (str(chained), "backing file outside"),
        (str(held), "in use by a running machine"),
    ]
    for path, reason in cases:
        name = world.name("refused")
        answer = await admin.post(VMS_API, json=new_vm(world, name, import_path=path))
        assert answer.status_code == 400, (path, answer.text)
        message = answer.json()["fields"]["import_path"]
        assert reason in message, (path, message)
        assert name not in world.h0.host.domain_names()

    await world.service.power(holder_id, "poweroff")
    await world.wait_state(holder_id, "shutoff")
    answer = await admin.post(VMS_API, json=new_vm(world, world.name("second"), import_path=str(held)))
    assert answer.status_code == 400
    assert "already the disk of" in answer.json()["fields"]["import_path"]
    assert escape.is_symlink() and Path("/etc/hostname").exists(), "nothing was touched"
