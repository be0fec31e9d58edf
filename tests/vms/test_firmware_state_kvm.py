"""Each VDI child's own NVRAM and TPM state, and the device policy in the running domain, on h0.

An initial's variable store and TPM state are copied to each child when the
child is made, again at populate (a key enrolled in the initial reaches the
children) and when it moves to a new image version; an image version published
from the source brings the source's state to the initial with its disk. They
are removed with the child, and a volatile child boots from
throw-away copies that leave its saved state unchanged. The device policy is
checked where it is enforced: the running domain's SPICE server (live XML and
QEMU's command line) and the ``.vv`` file, not the UI.
"""

from __future__ import annotations

import hashlib
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from app.db.schema import pools
from app.vms.records import Vm, children_of, get_vm, vm_by_name
from tests.services import efi
from tests.vms.test_firmware_kvm import until
from tests.vms.world import VmWorld

pytestmark = pytest.mark.kvm
GENEROUS = 120


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snakeoil_certificate() -> bytes:
    """The test key's certificate as the variable store keeps it (DER), to find it in a VARS file."""
    return x509.load_pem_x509_certificate(efi.SNAKEOIL_CERT.read_bytes()).public_bytes(Encoding.DER)


async def uefi_initial_with_children(world: VmWorld, count: int) -> tuple[Vm, list[Vm]]:
    service = world.service
    source_name = world.name("fwsrc")
    await service.create(
        {
            "name": source_name,
            "kind": "source",
            "hypervisor_id": world.h0.id,
            "memory_mib": 128,
            "disk_size_gib": 1,
            "machine": "q35",
            "firmware": "uefi",
            "tpm": True,
        }
    )
    source = await vm_by_name(world.db, source_name)
    assert source is not None
    created = await service.create_initial({"name": world.name("fwinit"), "source_id": source.id})
    assert created.operation_id is not None
    operation = await service.operations.wait(created.operation_id)
    assert operation.state == "succeeded", operation.error
    initial = await get_vm(world.db, created.vm_ids[0])
    assert initial is not None and initial.firmware == "uefi" and initial.tpm
    made = await service.create_vdi({"initial_id": initial.id, "prefix": world.name("fwkid"), "count": count})
    assert made.operation_id is not None
    operation = await service.operations.wait(made.operation_id)
    assert operation.state == "succeeded", operation.error
    return initial, await children_of(world.db, initial.id)


async def test_children_get_copies_of_the_initials_nvram_and_tpm_renewed_at_populate_and_removed_with_them(
    vm_world: VmWorld,
) -> None:
    images = vm_world.h0.images_dir
    initial, children = await uefi_initial_with_children(vm_world, 2)
    assert [child.firmware for child in children] == ["uefi", "uefi"] and all(child.tpm for child in children)
    init_vars, init_tpm = (
        images / f"{initial.name}.VARS.fd",
        images / f"{initial.name}.tpm" / "tpm2-00.permall",
    )
    assert initial.parent_id is not None
    source = await get_vm(vm_world.db, initial.parent_id)
    assert source is not None
    # v1 came from the source's disk, and the source's TPM (its own endorsement key) with it.
    source_tpm = images / f"{source.name}.tpm" / "tpm2-00.permall"
    assert digest(init_tpm) == digest(source_tpm)
    for child in children:
        child_vars = images / f"{child.name}.VARS.fd"
        child_tpm = images / f"{child.name}.tpm" / "tpm2-00.permall"
        # Copies (their own files), equal to the initial's at creation.
        assert child_vars.stat().st_ino != init_vars.stat().st_ino
        assert digest(child_vars) == digest(init_vars) and digest(child_tpm) == digest(init_tpm)
        defined = ET.fromstring(vm_world.h0.host.virsh("dumpxml", "--inactive", child.name))  # noqa: S314
        assert defined.findtext("os/nvram") == str(child_vars)

    # The admin enrols a key in the initial; populate hands it to every child.
    certificate = snakeoil_certificate()
    assert certificate not in init_vars.read_bytes()
    init_vars.write_bytes(efi.SNAKEOIL_VARS.read_bytes())
    op_id = await vm_world.service.populate(initial.id)
    operation = await vm_world.service.operations.wait(op_id)
    assert operation.state == "succeeded", operation.error
    for child in children:
        assert certificate in (images / f"{child.name}.VARS.fd").read_bytes()
        await vm_world.service.power(child.id, "poweroff")
        await vm_world.wait_state(child.id, "shutoff")

    # Deleting a child removes its firmware state, and only its own.
    gone = children[0]
    plan = await vm_world.service.plan_delete(gone.id, with_children=False, remove_disks=True)
    # The confirmation names them.
    assert plan.summary()["state_files"] == [
        str(images / f"{gone.name}.VARS.fd"),
        str(images / f"{gone.name}.tpm"),
    ]
    await vm_world.service.delete(
        gone.id, with_children=False, remove_disks=True, confirmed_vms=plan.names, confirmed_files=plan.files
    )
    assert not (images / f"{gone.name}.VARS.fd").exists() and not (images / f"{gone.name}.tpm").exists()
    assert (images / f"{children[1].name}.VARS.fd").exists() and init_vars.exists()

    # v2 published from the source brings the source's variable store (without the key enrolled
    # in the initial above); the child moved onto it gets a fresh copy, so the key is gone there too.
    kept_vars = images / f"{children[1].name}.VARS.fd"
    assert certificate in kept_vars.read_bytes()
    op_id = await vm_world.service.images.publish(initial.id, origin="source")
    operation = await vm_world.service.operations.wait(op_id)
    assert operation.state == "succeeded", operation.error
    assert digest(init_vars) == digest(images / f"{source.name}.VARS.fd")
    assert certificate not in init_vars.read_bytes()
    op_id = await vm_world.service.images.rollout(initial.id)
    operation = await vm_world.service.operations.wait(op_id)
    assert operation.state == "succeeded", operation.error
    assert certificate not in kept_vars.read_bytes() and digest(kept_vars) == digest(init_vars)


async def test_a_volatile_child_boots_from_copies_and_leaves_its_saved_nvram_and_tpm_unchanged(
    vm_world: VmWorld,
) -> None:
    images, volatile = vm_world.h0.images_dir, vm_world.h0.volatile_dir
    _initial, (child,) = await uefi_initial_with_children(vm_world, 1)
    await vm_world.service.set_flags(child.id, {"volatile": True})
    saved_vars, saved_tpm = images / f"{child.name}.VARS.fd", images / f"{child.name}.tpm" / "tpm2-00.permall"
    before = (digest(saved_vars), digest(saved_tpm))
    copy_vars = volatile / f"{child.name}.volatile.VARS.fd"

    await vm_world.service.power(child.id, "start")
    await vm_world.wait_state(child.id, "running")
    live = ET.fromstring(vm_world.h0.host.virsh("dumpxml", child.name))  # noqa: S314
    assert live.findtext("os/nvram") == str(copy_vars)
    assert (volatile / f"{child.name}.volatile.tpm" / "tpm2-00.permall").exists()
    # The firmware writes its variables (a boot counter at least) into the copy, not the saved store.
    await until(lambda: digest(copy_vars) != before[0], "the firmware writing its throw-away variable store")

    await vm_world.service.power(child.id, "poweroff")
    await vm_world.wait_state(child.id, "shutoff")
    await until(lambda: not copy_vars.exists(), "the throw-away copies removed after the boot", 30)
    assert not (volatile / f"{child.name}.volatile.tpm").exists()
    assert (digest(saved_vars), digest(saved_tpm)) == before


def qemu_command_line(name: str) -> str:
    found = subprocess.run(["pgrep", "-a", "-f", f"guest={name},"], capture_output=True, text=True).stdout
    lines = [line for line in found.splitlines() if "qemu-system" in line]
    assert len(lines) == 1, found
    return lines[0]


def vv_fields(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


async def test_the_device_policy_is_enforced_by_the_running_domain_and_a_pool_hands_out_its_own(
    vm_world: VmWorld,
) -> None:
    host = vm_world.h0.host
    name = vm_world.name("policy")
    created = await vm_world.service.create(
        {"name": name, "hypervisor_id": vm_world.h0.id, "memory_mib": 64, "disk_size_gib": 1}
    )
    vm_id = created.vm_ids[0]
    vm = await get_vm(vm_world.db, vm_id)
    assert vm is not None and (vm.clipboard, vm.file_transfer, vm.usb_redirect) == (False, False, 0)
    vm_world.install_guest(vm_world.h0, vm.disk_path, "banner")
    await vm_world.service.power(vm_id, "start")
    await vm_world.wait_state(vm_id, "running")

    # Off by default, in the SPICE server QEMU runs: no copy and paste, no file transfer, no USB slots.
    live = ET.fromstring(host.virsh("dumpxml", name))  # noqa: S314
    assert live.find("devices/graphics/clipboard").get("copypaste") == "no"  # type: ignore[union-attr]
    assert live.find("devices/graphics/filetransfer").get("enable") == "no"  # type: ignore[union-attr]
    assert live.findall("devices/redirdev") == []
    command = qemu_command_line(name)
    assert "disable-copy-paste=on" in command and "disable-agent-file-xfer=on" in command
    admin = await vm_world.admin()
    vv = vv_fields((await admin.post(f"/vms/{vm_id}/console.vv")).text)
    assert vv["enable-usbredir"] == "0"

    # Handed to a pool that allows the clipboard and two USB devices: the pool's policy, from the next boot.
    created_pool = await admin.post("/pools", {"name": name, "clipboard": "1", "usb_redirect": "2"})
    assert created_pool.status_code == 303, created_pool.text
    pool = await vm_world.db.fetch_one(pools.select().where(pools.c.name == name))
    assert pool is not None and pool["clipboard"] and pool["usb_redirect"] == 2
    assert (await admin.post(f"/pools/{pool['id']}/vms", {"vm_id": str(vm_id)})).status_code == 303
    vm = await get_vm(vm_world.db, vm_id)
    assert vm is not None and (vm.clipboard, vm.file_transfer, vm.usb_redirect) == (True, False, 2)
    refused = await admin.post(f"/api/v1/admin/vms/{vm_id}/policy", json={"clipboard": False})
    assert refused.status_code == 409 and refused.json()["error"] == "pooled"

    await vm_world.service.power(vm_id, "poweroff")
    await vm_world.wait_state(vm_id, "shutoff")
    await vm_world.service.power(vm_id, "start")
    await vm_world.wait_state(vm_id, "running")
    live = ET.fromstring(host.virsh("dumpxml", name))  # noqa: S314
    assert live.find("devices/graphics/clipboard").get("copypaste") == "yes"  # type: ignore[union-attr]
    assert live.find("devices/graphics/filetransfer").get("enable") == "no"  # type: ignore[union-attr]
    assert len(live.findall("devices/redirdev")) == 2
    command = qemu_command_line(name)
    assert "disable-copy-paste" not in command and "disable-agent-file-xfer=on" in command
    vv = vv_fields((await admin.post(f"/vms/{vm_id}/console.vv")).text)
    assert vv["enable-usbredir"] == "1"
    await vm_world.service.power(vm_id, "poweroff")


async def test_the_second_cdrom_drive_takes_and_ejects_its_own_medium(vm_world: VmWorld) -> None:
    name = vm_world.name("twocd")
    iso_a, iso_b = (str(vm_world.h0.iso_dir / iso) for iso in ("install-a.iso", "tools-b.iso"))
    created = await vm_world.service.create(
        {
            "name": name,
            "hypervisor_id": vm_world.h0.id,
            "disk_size_gib": 1,
            "machine": "q35",
            "iso_path": iso_a,
            "boot_order": ["cdrom", "cdrom2", "hd"],
        }
    )
    vm_id = created.vm_ids[0]
    admin = await vm_world.admin()

    def drives() -> list[tuple[str | None, str | None, str | None]]:
        root = ET.fromstring(vm_world.h0.host.virsh("dumpxml", "--inactive", name))  # noqa: S314
        found = []
        for disk in root.findall("devices/disk[@device='cdrom']"):
            source, target, boot = disk.find("source"), disk.find("target"), disk.find("boot")
            found.append(
                (
                    source.get("file") if source is not None else None,
                    target.get("dev") if target is not None else None,
                    boot.get("order") if boot is not None else None,
                )
            )
        return found

    # Installer in drive 1, drive 2 empty; both SATA on q35, first and second in the boot order.
    assert drives() == [(iso_a, "sdb", "1"), (None, "sdc", "2")]
    inserted = await admin.post(f"/api/v1/admin/vms/{vm_id}/media", json={"iso_path": iso_b, "drive": 2})
    assert inserted.status_code == 200, inserted.text
    assert inserted.json()["vm"]["iso2_path"] == iso_b
    assert drives() == [(iso_a, "sdb", "1"), (iso_b, "sdc", "2")]
    ejected = await admin.post(f"/api/v1/admin/vms/{vm_id}/media", json={"iso_path": None, "drive": 1})
    assert ejected.status_code == 200 and ejected.json()["vm"]["iso_path"] is None
    assert drives() == [(None, "sdb", "1"), (iso_b, "sdc", "2")]
    bad = await admin.post(f"/api/v1/admin/vms/{vm_id}/media", json={"iso_path": iso_b, "drive": 3})
    assert bad.status_code == 400 and "drive" in bad.json()["fields"]
