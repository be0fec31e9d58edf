"""What the VM workflows need beyond start and stop, on the real hypervisor h0 over pinned qemu+ssh:
whether the host offers KVM, changing a CD-ROM's medium (in the definition, and live while
the domain runs), starting paused and resuming (many starts at once), and a quick
reconnection announced as "up" again so that listeners re-read what they may have missed
(libvirt does not replay events)."""

from __future__ import annotations

import asyncio
import shutil
import xml.etree.ElementTree as ET

from app.hyper import Hypervisor
from app.hyper.capabilities import offers_kvm
from tests.hyper.conftest import RegistryFactory, ssh_record
from tests.services import guests
from tests.services.guests import GuestImages
from tests.services.libvirt_host import LibvirtHost
from tests.waiting import eventually

GENEROUS = 60


def with_cdrom(xml: str, iso: str | None) -> str:
    root = ET.fromstring(xml)  # noqa: S314 -- the test's own XML
    devices = root.find("devices")
    assert devices is not None
    devices.append(cdrom(iso))
    return ET.tostring(root, encoding="unicode")


def cdrom(iso: str | None) -> ET.Element:
    disk = ET.Element("disk", type="file", device="cdrom")
    ET.SubElement(disk, "driver", name="qemu", type="raw")
    if iso is not None:
        ET.SubElement(disk, "source", file=iso)
    ET.SubElement(disk, "target", dev="sdc", bus="sata")
    ET.SubElement(disk, "readonly")
    return disk


def medium(xml: str) -> str | None:
    source = ET.fromstring(xml).find("devices/disk[@device='cdrom']/source")  # noqa: S314
    return source.get("file") if source is not None else None


def test_kvm_is_recognised_in_libvirts_capabilities() -> None:
    kvm = (
        "<capabilities><guest><os_type>hvm</os_type><arch name='x86_64'>"
        "<domain type='qemu'/><domain type='kvm'/></arch></guest></capabilities>"
    )
    tcg_only = "<capabilities><guest><arch name='x86_64'><domain type='qemu'/></arch></guest></capabilities>"
    other_arch = (
        "<capabilities><guest><arch name='aarch64'><domain type='kvm'/></arch></guest></capabilities>"
    )
    assert offers_kvm(kvm) is True
    assert offers_kvm(tcg_only) is False
    assert offers_kvm(other_arch) is False


async def test_the_hypervisor_says_whether_it_runs_kvm_domains(
    registry_factory: RegistryFactory, h0: LibvirtHost
) -> None:
    harness = await registry_factory([ssh_record(h0)])
    assert await harness.registry.get(1).supports_kvm() is (h0.virt_type == "kvm")


async def test_a_cdrom_medium_changes_in_the_definition_and_live_while_running(
    registry_factory: RegistryFactory, h0: LibvirtHost, guest_images: GuestImages
) -> None:
    harness = await registry_factory([ssh_record(h0)])
    hv: Hypervisor = harness.registry.get(1)
    name = "dev-cdrom"
    iso_dir = h0.dir / "iso"
    first, second = iso_dir / "dev-first.iso", iso_dir / "dev-second.iso"
    for iso in (first, second):
        iso.write_bytes(b"\0" * 4096)
        shutil.chown(iso, h0.ssh_user, "libvirt")
    disk = h0.images_dir / f"{name}.qcow2"
    guest_images.overlay("banner", disk)
    shutil.chown(disk, h0.ssh_user, "libvirt")
    xml = guests.domain_xml(name, disk, virt_type=guests.FAST_VIRT_TYPE, spice_listen=h0.spice_listen)
    await hv.define(with_cdrom(xml, str(first)))
    try:
        # Shut off: only the definition changes.
        assert await hv.update_device(name, ET.tostring(cdrom(str(second)), encoding="unicode")) is False
        assert medium(await hv.domain_xml(name, inactive=True)) == str(second)

        await hv.start(name)
        assert medium(await hv.domain_xml(name)) == str(second)
        # Running: the guest sees the new medium at once, and it stays for the next boot.
        assert await hv.update_device(name, ET.tostring(cdrom(str(first)), encoding="unicode")) is True
        assert medium(await hv.domain_xml(name)) == str(first)
        assert medium(await hv.domain_xml(name, inactive=True)) == str(first)
        # Ejected: no source at all.
        assert await hv.update_device(name, ET.tostring(cdrom(None), encoding="unicode")) is True
        assert medium(await hv.domain_xml(name)) is None
        assert medium(await hv.domain_xml(name, inactive=True)) is None
    finally:
        await hv.destroy(name)
        await hv.undefine(name)
        for path in (disk, first, second):
            path.unlink(missing_ok=True)


async def test_a_domain_started_paused_runs_once_resumed(
    registry_factory: RegistryFactory, h0: LibvirtHost, guest_images: GuestImages
) -> None:
    harness = await registry_factory([ssh_record(h0)])
    hv: Hypervisor = harness.registry.get(1)
    name = "dev-paused"
    disk = h0.images_dir / f"{name}.qcow2"
    guest_images.overlay("banner", disk)
    shutil.chown(disk, h0.ssh_user, "libvirt")
    await hv.define(guests.domain_xml(name, disk, virt_type=h0.virt_type, spice_listen=h0.spice_listen))
    try:
        assert await hv.resume(name) is False, "a shut-off domain is not paused"
        assert await hv.start(name, paused=True) is True
        assert await hv.domain_state(name) == "paused"
        suspended = await harness.wait_for_domain_event(name, "suspended")
        assert suspended.state == "paused"
        assert await hv.start(name) is False, "it is already running (paused)"
        assert await hv.resume(name) is True
        assert await hv.domain_state(name) == "running"
        resumed = await harness.wait_for_domain_event(name, "resumed")
        assert resumed.state == "running"
        assert await hv.resume(name) is False, "a running domain is not paused"
    finally:
        await hv.destroy(name)
        await hv.undefine(name)
        disk.unlink(missing_ok=True)


async def test_a_quick_reconnection_is_announced_as_up_again_without_going_down(
    registry_factory: RegistryFactory, h0: LibvirtHost
) -> None:
    # fence_after far above the restart: the hypervisor never counts as down here.
    harness = await registry_factory([ssh_record(h0)], fence_after=GENEROUS)
    hv = harness.registry.get(1)
    assert hv.connections == 1
    ups_before = [e for e in harness.connection_events if e.state == "up"]
    assert len(ups_before) == 1

    # Every SSH session (libvirt's tunnel and the command channel) dies with the listener.
    await asyncio.to_thread(h0.stop_sshd)
    await asyncio.to_thread(h0.start_sshd)
    await eventually(lambda: hv.connections >= 2 and hv.connected, "a new connection", timeout=GENEROUS)
    await eventually(
        lambda: sum(e.state == "up" for e in harness.connection_events) >= 2,
        "the new connection announced as up",
        timeout=GENEROUS,
    )

    assert [e.state for e in harness.connection_events] == ["up", "up"]
    assert harness.registry.get(1) is hv and hv.state == "up"
    # Both halves of the new connection work: a command over SSH and a libvirt call.
    assert (await hv.run(["echo", "reconnected"])).stdout == "reconnected\n"
    assert isinstance(await hv.list_domains(), list)
