"""The QEMU guest agent: a real Linux guest running qemu-ga reports its OS and addresses, and is
shut down through the agent although it ignores the ACPI power button.

The guest is Debian's cloud kernel with a busybox initramfs that starts qemu-ga
(:mod:`tests.services.agent_guest`), booted directly from kernel and initramfs:
the VM is made by the dashboard, and the test adds the kernel boot to its
definition as an admin would with ``virsh edit``. It runs emulated (TCG): this
kernel does not get past its first instructions under the nested KVM here.
"""

from __future__ import annotations

import asyncio
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import libvirt
import pytest

from app.vms.records import get_vm
from tests.services import agent_guest
from tests.services.libvirt_host import LibvirtHost
from tests.vms.world import WorldFactory
from tests.waiting import eventually

pytestmark = pytest.mark.kvm
GENEROUS = 240


def boot_kernel_directly(host: LibvirtHost, name: str, kernel: Path, initrd: Path) -> None:
    conn = libvirt.open(host.local_uri)
    try:
        domain = conn.lookupByName(name)
        root = ET.fromstring(  # noqa: S314 -- libvirt's own XML
            domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
        )
        os_element = root.find("os")
        assert os_element is not None
        for tag, text in (
            ("kernel", str(kernel)),
            ("initrd", str(initrd)),
            ("cmdline", "console=ttyS0 panic=-1"),
        ):
            ET.SubElement(os_element, tag).text = text
        conn.defineXML(ET.tostring(root, encoding="unicode"))
    finally:
        conn.close()


async def test_the_agent_reports_os_and_addresses_and_shuts_down_a_guest_that_ignores_acpi(
    world_factory: WorldFactory, hypervisor_host: LibvirtHost, tmp_path: Path
) -> None:
    world = await world_factory([hypervisor_host], vms={"domain_type": "qemu", "agent_interval": 0.5})
    kernel, initrd = await asyncio.to_thread(agent_guest.build, tmp_path)
    name = world.name("agent")
    created = await world.service.create(
        {"name": name, "hypervisor_id": world.h0.id, "memory_mib": 256, "disk_size_gib": 1}
    )
    vm_id = created.vm_ids[0]
    placed = []
    for path in (kernel, initrd):
        target = world.h0.images_dir / f"{name}-{path.name}"
        shutil.copyfile(path, target)
        shutil.chown(target, hypervisor_host.ssh_user, "libvirt")
        placed.append(target)
    await asyncio.to_thread(boot_kernel_directly, hypervisor_host, name, placed[0], placed[1])
    vm = await get_vm(world.db, vm_id)
    assert vm is not None
    defined = ET.fromstring(hypervisor_host.virsh("dumpxml", "--inactive", name))  # noqa: S314
    channels = {c.find("target").get("name") for c in defined.findall("devices/channel")}  # type: ignore[union-attr]
    assert "org.qemu.guest_agent.0" in channels

    await world.service.power(vm_id, "start")
    await world.wait_state(vm_id, "running")
    admin = await world.admin()

    async def reported() -> dict[str, Any] | None:
        answer = await admin.get(f"/api/v1/admin/vms/{vm_id}")
        guest = answer.json()["vm"]["guest"]
        return guest if guest and agent_guest.GUEST_ADDRESS + "/32" in guest["addresses"] else None

    guest = await eventually(reported, "the guest agent's report in the API", timeout=GENEROUS, interval=0.5)
    assert guest["os_name"] == agent_guest.GUEST_OS
    listed = (await admin.get("/api/v1/admin/vms")).json()["vms"]
    assert [v["guest"] for v in listed if v["id"] == vm_id] == [guest]
    row = (await admin.get(f"/vms/rows?ids={vm_id}")).text
    assert agent_guest.GUEST_OS in row and agent_guest.GUEST_ADDRESS in row

    # "Shut down": the guest has no ACPI handler at all, only its agent can do it.
    await world.service.power(vm_id, "shutdown")
    await world.wait_state(vm_id, "shutoff", timeout=120)
    # A stopped guest has no report any more.
    await world.service.agents.refresh_all()
    assert (await admin.get(f"/api/v1/admin/vms/{vm_id}")).json()["vm"]["guest"] is None
