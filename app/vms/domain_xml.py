"""libvirt domain XML: a resolved :class:`DomainDefinition` in, XML out, and back.

:func:`build_domain_xml` composes the device builders of :mod:`app.vms.devices`
(ElementTree throughout, so no value is ever pasted into markup).
"""

from __future__ import annotations

import secrets
import uuid as uuidlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from typing import Literal

from app.vms.devices import channels, cpu, disks, firmware, graphics, network, sound, tpm, usb, video
from app.vms.devices._xml import sub, to_text
from app.vms.devices.cpu import CpuMode
from app.vms.devices.disks import DiskBus, DiskCache, DiskFormat, Machine
from app.vms.devices.firmware import UefiSpec
from app.vms.devices.graphics import EXPIRED
from app.vms.devices.network import NetworkType, NicModel
from app.vms.devices.sound import SoundModel

__all__ = ["EXPIRED", "DevicePolicy", "DomainDefinition", "UefiSpec", "build_domain_xml"]

MAC_PREFIX = "52:54:00"


def random_mac() -> str:
    tail = secrets.token_bytes(3)
    return MAC_PREFIX + "".join(f":{byte:02x}" for byte in tail)


def new_uuid() -> str:
    return str(uuidlib.uuid4())


@dataclass(frozen=True)
class DevicePolicy:
    """What a console client may do besides seeing and typing: all off unless allowed."""

    clipboard: bool = False
    file_transfer: bool = False
    usb_redirections: int = 0


@dataclass(frozen=True)
class DomainDefinition:
    """Everything the XML says, resolved (no defaults left to guess)."""

    name: str
    uuid: str
    domain_type: Literal["kvm", "qemu"]
    vcpu_sockets: int
    vcpu_cores: int
    memory_mib: int
    # The file the domain boots from: the VM's disk, or its volatile overlay.
    disk_source: str
    spice_listen: str
    # Offer SPICE's plain port next to the TLS port (per hypervisor, for old clients).
    spice_plain: bool = False
    iso_path: str | None = None
    iso2_path: str | None = None
    boot_order: tuple[str, ...] = ("hd",)
    network: str | None = None
    network_type: NetworkType = "bridge"
    mac_address: str | None = None
    os_type: str = "linux"
    machine: Machine = "pc"
    # None: BIOS (SeaBIOS).
    uefi: UefiSpec | None = None
    # The swtpm socket of the VM's TPM 2.0, or None for no TPM.
    tpm_socket: str | None = None
    cpu_mode: CpuMode = "default"
    disk_bus: DiskBus = "virtio"
    disk_cache: DiskCache = "default"
    disk_format: DiskFormat = "qcow2"
    nic_model: NicModel = "virtio"
    sound: SoundModel = "none"
    video_heads: int = 1
    policy: DevicePolicy = DevicePolicy()
    # Random, expired at definition time; never stored anywhere.
    spice_password: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)

    @property
    def vcpus(self) -> int:
        return self.vcpu_sockets * self.vcpu_cores

    def booting_from(self, disk_source: str) -> DomainDefinition:
        return replace(self, disk_source=disk_source)

    def boot_index(self, device: str) -> int | None:
        """1-based place of ``device`` ("hd", "cdrom", "cdrom2", "network") in the boot order."""
        if device in self.boot_order:
            return self.boot_order.index(device) + 1
        return None


def build_domain_xml(definition: DomainDefinition) -> str:
    d = definition
    domain = ET.Element("domain", {"type": d.domain_type})
    sub(domain, "name", d.name)
    sub(domain, "uuid", d.uuid)
    sub(domain, "memory", str(d.memory_mib), unit="MiB")
    sub(domain, "currentMemory", str(d.memory_mib), unit="MiB")
    sub(domain, "vcpu", str(d.vcpus), placement="static")
    windows = d.os_type == "windows"
    domain.append(firmware.os_element(d.machine, d.uefi))
    smm = d.uefi is not None and d.uefi.requires_smm
    domain.append(firmware.features(windows=windows, smm=smm))
    domain.append(cpu.cpu(d.cpu_mode, d.vcpu_sockets, d.vcpu_cores))
    domain.append(firmware.clock(windows=windows))
    sub(domain, "on_poweroff", "destroy")
    sub(domain, "on_reboot", "restart")
    sub(domain, "on_crash", "destroy")

    devices = sub(domain, "devices")
    devices.append(
        disks.disk(disks.DiskSpec(d.disk_source, d.disk_bus, d.disk_cache, d.boot_index("hd"), d.disk_format))
    )
    for slot, (iso, name) in enumerate(((d.iso_path, "cdrom"), (d.iso2_path, "cdrom2"))):
        devices.append(disks.cdrom(disks.CdromSpec(slot, d.machine, iso, d.boot_index(name))))
    if d.disk_bus == "scsi":
        devices.append(disks.scsi_controller())
    if d.network is not None:
        nic = network.NicSpec(
            d.network, d.mac_address or random_mac(), d.network_type, d.nic_model, d.boot_index("network")
        )
        devices.append(network.interface(nic))
    devices.append(usb.controller())
    devices.append(channels.virtio_serial())
    devices.append(usb.tablet())
    devices.append(channels.guest_agent())
    devices.append(channels.spice_agent())
    policy = d.policy
    devices.append(
        graphics.spice(
            graphics.SpiceSpec(
                d.spice_listen, d.spice_password, policy.clipboard, policy.file_transfer, d.spice_plain
            )
        )
    )
    devices.append(video.qxl(d.video_heads))
    card = sound.sound(d.sound)
    if card is not None:
        devices.append(card)
    if d.tpm_socket is not None:
        devices.append(tpm.tpm(tpm.TpmSpec(d.tpm_socket)))
    devices.extend(usb.redirections(policy.usb_redirections))
    sub(devices, "memballoon", model="none")
    return to_text(domain)


@dataclass(frozen=True)
class DomainFacts:
    """What an existing domain's XML says, for adopting domains defined elsewhere."""

    memory_mib: int = 0
    vcpu_sockets: int = 1
    vcpu_cores: int = 1
    disk_path: str = ""
    disk_format: str = "qcow2"
    iso_path: str | None = None
    iso2_path: str | None = None
    network: str | None = None
    mac_address: str | None = None
    boot_order: tuple[str, ...] = ("hd",)


_UNITS = {
    "b": 1,
    "bytes": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
}


def read_domain_facts(xml: str) -> DomainFacts:
    """Parse a domain XML (any origin) into the parameters the dashboard stores."""
    root = ET.fromstring(xml)  # noqa: S314 - libvirt's own output, over a pinned channel
    memory_mib = 0
    memory = root.find("memory")
    if memory is not None and memory.text:
        unit = _UNITS.get((memory.get("unit") or "KiB").lower(), 1024)
        memory_mib = int(memory.text) * unit // (1024 * 1024)
    vcpus = int((root.findtext("vcpu") or "1").strip() or 1)
    topology = root.find("cpu/topology")
    sockets, cores = vcpus, 1
    if topology is not None:
        sockets = int(topology.get("sockets", vcpus))
        cores = int(topology.get("cores", 1)) * int(topology.get("threads", 1)) * int(topology.get("dies", 1))
    disk_path = ""
    disk_format = "qcow2"
    iso_path = iso2_path = None
    cdroms = 0
    boots: list[tuple[int, str]] = []
    for disk in root.findall("devices/disk"):
        source = disk.find("source")
        path = (source.get("file") or source.get("dev") or "") if source is not None else ""
        boot = disk.find("boot")
        if disk.get("device") == "cdrom":
            drive = "cdrom" if cdroms == 0 else "cdrom2"
            if cdroms == 0:
                iso_path = path or None
            elif cdroms == 1:
                iso2_path = path or None
            cdroms += 1
            if boot is not None:
                boots.append((int(boot.get("order", 9)), drive))
        elif disk.get("device", "disk") == "disk" and not disk_path:
            disk_path = path
            driver = disk.find("driver")
            if driver is not None and driver.get("type") == "raw":
                disk_format = "raw"
            if boot is not None:
                boots.append((int(boot.get("order", 9)), "hd"))
    network = mac = None
    nic = root.find("devices/interface")
    if nic is not None:
        source = nic.find("source")
        network = (source.get("bridge") or source.get("network")) if source is not None else None
        mac_element = nic.find("mac")
        mac = mac_element.get("address") if mac_element is not None else None
        boot = nic.find("boot")
        if boot is not None:
            boots.append((int(boot.get("order", 9)), "network"))
    if not boots:
        mapping = {"hd": "hd", "cdrom": "cdrom", "network": "network"}
        boots = [
            (index, mapping[element.get("dev", "")])
            for index, element in enumerate(root.findall("os/boot"))
            if element.get("dev") in mapping
        ]
    order = tuple(device for _, device in sorted(boots)) or ("hd",)
    return DomainFacts(
        memory_mib=memory_mib,
        vcpu_sockets=max(sockets, 1),
        vcpu_cores=max(cores, 1),
        disk_path=disk_path,
        disk_format=disk_format,
        iso_path=iso_path,
        iso2_path=iso2_path,
        network=network,
        mac_address=mac,
        boot_order=order,
    )


def with_disk_source(xml: str, disk_source: str) -> str:
    """The same domain XML with its first disk reading from ``disk_source``."""
    root = ET.fromstring(xml)  # noqa: S314 - libvirt's own output
    for disk in root.findall("devices/disk"):
        if disk.get("device", "disk") == "disk":
            source = disk.find("source")
            if source is None:
                source = ET.SubElement(disk, "source")
            source.attrib.clear()
            source.set("file", disk_source)
            disk.set("type", "file")
            break
    return ET.tostring(root, encoding="unicode")


def disk_source_of(xml: str) -> str:
    return read_domain_facts(xml).disk_path


def cdrom_device_xml(
    iso_path: str | None, *, machine: Machine = "pc", slot: int = 0, boot_index: int | None = None
) -> str:
    """A CD-ROM drive's element for a live and persistent media change (None ejects).

    ``boot_index``: the drive's place in the boot order, kept (libvirt takes the element whole).
    """
    return to_text(disks.cdrom(disks.CdromSpec(slot, machine, iso_path, boot_index)))
