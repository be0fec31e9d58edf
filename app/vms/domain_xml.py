"""libvirt domain XML: a resolved :class:`DomainDefinition` in, XML out, and back.

:func:`build_domain_xml` uses ElementTree, so no value is ever pasted into markup.
SPICE is never open: the domain is defined with a random password that expired
long ago, so a console can only connect after the proxy set a fresh one.
"""

from __future__ import annotations

import secrets
import uuid as uuidlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from typing import Literal

# passwdValidTo in the past: the definition's random password is expired from the start.
EXPIRED = "2000-01-01T00:00:00"
MAC_PREFIX = "52:54:00"


def random_mac() -> str:
    tail = secrets.token_bytes(3)
    return MAC_PREFIX + "".join(f":{byte:02x}" for byte in tail)


def new_uuid() -> str:
    return str(uuidlib.uuid4())


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
    iso_path: str | None = None
    boot_order: tuple[str, ...] = ("hd",)
    network: str | None = None
    mac_address: str | None = None
    os_type: str = "linux"
    # Random, expired at definition time; never stored anywhere.
    spice_password: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    usb_redirections: int = 2

    @property
    def vcpus(self) -> int:
        return self.vcpu_sockets * self.vcpu_cores

    def booting_from(self, disk_source: str) -> DomainDefinition:
        return replace(self, disk_source=disk_source)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def _boot_index(definition: DomainDefinition, device: str) -> str | None:
    if device in definition.boot_order:
        return str(definition.boot_order.index(device) + 1)
    return None


def build_domain_xml(definition: DomainDefinition) -> str:
    d = definition
    domain = ET.Element("domain", {"type": d.domain_type})
    _sub(domain, "name", d.name)
    _sub(domain, "uuid", d.uuid)
    _sub(domain, "memory", str(d.memory_mib), unit="MiB")
    _sub(domain, "currentMemory", str(d.memory_mib), unit="MiB")
    _sub(domain, "vcpu", str(d.vcpus), placement="static")

    os_element = _sub(domain, "os")
    _sub(os_element, "type", "hvm", arch="x86_64", machine="pc")
    _sub(os_element, "bootmenu", enable="no")

    features = _sub(domain, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if d.os_type == "windows":
        hyperv = _sub(features, "hyperv", mode="custom")
        _sub(hyperv, "relaxed", state="on")
        _sub(hyperv, "vapic", state="on")
        _sub(hyperv, "spinlocks", state="on", retries="8191")

    # The default CPU model with the requested topology: host-passthrough breaks on
    # some hosts (and live migration), so it is never used.
    cpu = _sub(domain, "cpu")
    _sub(cpu, "topology", sockets=str(d.vcpu_sockets), dies="1", cores=str(d.vcpu_cores), threads="1")

    clock = _sub(domain, "clock", offset="localtime" if d.os_type == "windows" else "utc")
    _sub(clock, "timer", name="rtc", tickpolicy="catchup")
    _sub(clock, "timer", name="pit", tickpolicy="delay")
    _sub(clock, "timer", name="hpet", present="no")

    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "destroy")

    devices = _sub(domain, "devices")
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type="qcow2", discard="unmap")
    _sub(disk, "source", file=d.disk_source)
    _sub(disk, "target", dev="vda", bus="virtio")
    if (index := _boot_index(d, "hd")) is not None:
        _sub(disk, "boot", order=index)

    # A CD-ROM drive always exists so that an ISO can be inserted or ejected later.
    cdrom = _sub(devices, "disk", type="file", device="cdrom")
    _sub(cdrom, "driver", name="qemu", type="raw")
    if d.iso_path is not None:
        _sub(cdrom, "source", file=d.iso_path)
    _sub(cdrom, "target", dev="hdc", bus="ide")
    _sub(cdrom, "readonly")
    if (index := _boot_index(d, "cdrom")) is not None:
        _sub(cdrom, "boot", order=index)

    # No NIC at all without a network: an unconnected NIC only makes iPXE spin.
    if d.network is not None:
        nic = _sub(devices, "interface", type="bridge")
        _sub(nic, "mac", address=d.mac_address or random_mac())
        _sub(nic, "source", bridge=d.network)
        _sub(nic, "model", type="virtio")
        if (index := _boot_index(d, "network")) is not None:
            _sub(nic, "boot", order=index)

    _sub(devices, "controller", type="usb", index="0", model="qemu-xhci", ports="15")
    _sub(devices, "controller", type="virtio-serial", index="0")
    _sub(devices, "input", type="tablet", bus="usb")

    agent = _sub(devices, "channel", type="unix")
    _sub(agent, "target", type="virtio", name="org.qemu.guest_agent.0")
    vdagent = _sub(devices, "channel", type="spicevmc")
    _sub(vdagent, "target", type="virtio", name="com.redhat.spice.0")

    graphics = _sub(
        devices,
        "graphics",
        type="spice",
        autoport="yes",
        passwd=d.spice_password,
        passwdValidTo=EXPIRED,
        connected="keep",
    )
    _sub(graphics, "listen", type="address", address=d.spice_listen)
    _sub(graphics, "image", compression="auto_glz")
    _sub(graphics, "streaming", mode="filter")
    _sub(graphics, "mouse", mode="client")

    video = _sub(devices, "video")
    _sub(video, "model", type="qxl", ram="65536", vram="65536", vgamem="16384", heads="1", primary="yes")

    for _ in range(d.usb_redirections):
        _sub(devices, "redirdev", bus="usb", type="spicevmc")
    _sub(devices, "memballoon", model="none")

    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode")


@dataclass(frozen=True)
class DomainFacts:
    """What an existing domain's XML says, for adopting domains defined elsewhere."""

    memory_mib: int = 0
    vcpu_sockets: int = 1
    vcpu_cores: int = 1
    disk_path: str = ""
    iso_path: str | None = None
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
    iso_path = None
    boots: list[tuple[int, str]] = []
    for disk in root.findall("devices/disk"):
        source = disk.find("source")
        path = (source.get("file") or source.get("dev") or "") if source is not None else ""
        boot = disk.find("boot")
        if disk.get("device") == "cdrom":
            iso_path = iso_path or (path or None)
            if boot is not None:
                boots.append((int(boot.get("order", 9)), "cdrom"))
        elif disk.get("device", "disk") == "disk" and not disk_path:
            disk_path = path
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
        iso_path=iso_path,
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


def cdrom_device_xml(iso_path: str | None) -> str:
    """The CD-ROM device element for a live and persistent media change (None ejects)."""
    cdrom = ET.Element("disk", {"type": "file", "device": "cdrom"})
    _sub(cdrom, "driver", name="qemu", type="raw")
    if iso_path is not None:
        _sub(cdrom, "source", file=iso_path)
    _sub(cdrom, "target", dev="hdc", bus="ide")
    _sub(cdrom, "readonly")
    return ET.tostring(cdrom, encoding="unicode")
