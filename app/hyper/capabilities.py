"""What a hypervisor host can run, from libvirt's own descriptions (parsed here, no I/O).

* The host capabilities XML lists the domain types (``kvm``: hardware
  virtualisation, ``qemu``: emulation with TCG) the host offers.
* The *domain* capabilities XML (``getDomainCapabilities``) says, per domain type
  and machine, whether UEFI firmware, a secure loader, an emulated TPM and the
  host CPU modes are supported.
* QEMU's firmware descriptors (``/usr/share/qemu/firmware/*.json``) say which
  OVMF image has which features and which variable store goes with it.

What libvirt *describes* is not always what the host *runs*: nested KVM without
System Management Mode lists UEFI and ``host-passthrough`` and then fails to
start them. :mod:`app.hyper.trials` starts tiny throw-away domains to find out;
:class:`HostCapabilities` joins both.
"""

from __future__ import annotations

import fnmatch
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

import libvirt

DOMAIN_TYPES = ("kvm", "qemu")


def offers_kvm(capabilities_xml: str, arch: str = "x86_64") -> bool:
    return "kvm" in offered_domain_types(capabilities_xml, arch)


def offered_domain_types(capabilities_xml: str, arch: str = "x86_64") -> tuple[str, ...]:
    """The domain types (``kvm``, ``qemu``) offered for ``arch`` guests, KVM first."""
    root = ET.fromstring(capabilities_xml)  # noqa: S314 -- libvirt's own XML
    found: set[str] = set()
    for guest in root.findall("guest"):
        machine = guest.find("arch")
        if machine is None or machine.get("name") != arch:
            continue
        found.update(domain.get("type", "") for domain in machine.findall("domain"))
    return tuple(kind for kind in DOMAIN_TYPES if kind in found)


def supports_kvm(conn: libvirt.virConnect, arch: str = "x86_64") -> bool:
    """True when ``<domain type='kvm'>`` guests of ``arch`` can run on this host."""
    return offers_kvm(conn.getCapabilities(), arch)


@dataclass(frozen=True)
class DomainCapabilities:
    """One domain type's ``getDomainCapabilities`` answer, for the q35 machine."""

    domain_type: str
    efi: bool = False
    secure_loader: bool = False
    loaders: tuple[str, ...] = ()
    tpm_external: bool = False
    tpm_2: bool = False
    cpu_modes: tuple[str, ...] = ()
    disk_buses: tuple[str, ...] = ()
    video_models: tuple[str, ...] = ()


def _values(element: ET.Element | None, enum: str) -> tuple[str, ...]:
    if element is None:
        return ()
    found = element.find(f"enum[@name='{enum}']")
    return tuple(value.text or "" for value in found.findall("value")) if found is not None else ()


def parse_domain_capabilities(xml: str) -> DomainCapabilities:
    root = ET.fromstring(xml)  # noqa: S314 -- libvirt's own XML
    os_element = root.find("os")
    loader = os_element.find("loader") if os_element is not None else None
    efi = os_element is not None and os_element.get("supported") == "yes"
    efi = efi and "efi" in _values(os_element, "firmware")
    tpm = root.find("devices/tpm")
    tpm_supported = tpm is not None and tpm.get("supported") == "yes"
    modes = tuple(
        mode.get("name", "")
        for mode in root.findall("cpu/mode")
        if mode.get("supported") == "yes" and mode.get("name") in ("host-model", "host-passthrough")
    )
    return DomainCapabilities(
        domain_type=root.findtext("domain") or "",
        efi=efi,
        secure_loader=loader is not None and "yes" in _values(loader, "secure"),
        loaders=tuple(value.text or "" for value in loader.findall("value")) if loader is not None else (),
        tpm_external=tpm_supported and "external" in _values(tpm, "backendModel"),
        tpm_2=tpm_supported and "2.0" in _values(tpm, "backendVersion"),
        cpu_modes=modes,
        disk_buses=_values(root.find("devices/disk"), "bus"),
        video_models=_values(root.find("devices/video"), "modelType"),
    )


@dataclass(frozen=True)
class FirmwareImage:
    """One OVMF build from QEMU's firmware descriptors."""

    code: str
    vars_template: str
    features: frozenset[str]
    machines: tuple[str, ...]

    @property
    def secure_boot(self) -> bool:
        return "secure-boot" in self.features

    @property
    def enrolled_keys(self) -> bool:
        return "enrolled-keys" in self.features

    @property
    def requires_smm(self) -> bool:
        return "requires-smm" in self.features

    def runs_machine(self, machine: str) -> bool:
        """``machine`` (``pc`` / ``q35``) matches one of the descriptor's machine globs."""
        concrete = {"pc": "pc-i440fx-99.0", "q35": "pc-q35-99.0"}.get(machine, machine)
        return any(fnmatch.fnmatchcase(concrete, pattern) for pattern in self.machines)


def parse_firmware_descriptors(documents: list[tuple[str, str]]) -> list[FirmwareImage]:
    """UEFI images for x86_64 from ``(file name, JSON text)`` pairs, in QEMU's priority order.

    Files are ordered by name; a file in ``/etc/qemu/firmware`` overrides the one of
    the same name in ``/usr/share/qemu/firmware`` (and an empty one disables it).
    """
    chosen: dict[str, str] = {}
    for path, text in documents:
        name = path.rsplit("/", 1)[-1]
        if name not in chosen or path.startswith("/etc/"):
            chosen[name] = text
    images: list[FirmwareImage] = []
    for name in sorted(chosen):
        try:
            descriptor: dict[str, Any] = json.loads(chosen[name]) if chosen[name].strip() else {}
        except ValueError:
            continue
        image = _image(descriptor)
        if image is not None:
            images.append(image)
    return images


def _image(descriptor: dict[str, Any]) -> FirmwareImage | None:
    if "uefi" not in descriptor.get("interface-types", []):
        return None
    mapping = descriptor.get("mapping", {})
    if mapping.get("device") != "flash":
        return None
    code = mapping.get("executable", {}).get("filename")
    template = mapping.get("nvram-template", {}).get("filename")
    if not code or not template:
        return None
    machines: list[str] = []
    for target in descriptor.get("targets", []):
        if target.get("architecture") == "x86_64":
            machines.extend(target.get("machines", []))
    if not machines:
        return None
    return FirmwareImage(code, template, frozenset(descriptor.get("features", [])), tuple(machines))


def pick_firmware(
    images: list[FirmwareImage], *, machine: str, secure_boot: bool, loaders: tuple[str, ...] = ()
) -> FirmwareImage | None:
    """The first image for ``machine`` with Secure Boot (and Microsoft's keys enrolled) or without it."""
    for image in images:
        if loaders and image.code not in loaders:
            continue
        if not image.runs_machine(machine):
            continue
        if secure_boot and image.secure_boot and image.enrolled_keys:
            return image
        if not secure_boot and not image.secure_boot:
            return image
    return None


@dataclass(frozen=True)
class Trial:
    """The outcome of starting a throw-away domain that needs one feature."""

    works: bool
    detail: str = ""


@dataclass(frozen=True)
class HostCapabilities:
    """libvirt's and QEMU's descriptions of one hypervisor (what trials then confirm or refute)."""

    domain_types: tuple[str, ...]
    domains: dict[str, DomainCapabilities] = field(default_factory=dict)
    firmware: tuple[FirmwareImage, ...] = ()
    swtpm: bool = False
