"""The machine and its firmware: ``<os>`` (machine type, BIOS or UEFI, NVRAM) and ``<features>``.

UEFI is given explicitly (loader, NVRAM template and the VM's own NVRAM file)
rather than by libvirt's firmware autoselection, so that the dashboard knows
which variable store a VM starts from and can copy it between VMs.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from app.vms.devices._xml import sub
from app.vms.devices.disks import Machine

MACHINES: tuple[Machine, ...] = ("pc", "q35")


@dataclass(frozen=True)
class UefiSpec:
    loader: str
    nvram_template: str
    nvram_path: str
    secure_boot: bool = False
    # Secure Boot firmware guards its variables with System Management Mode.
    requires_smm: bool = False


def os_element(machine: Machine, uefi: UefiSpec | None) -> ET.Element:
    element = ET.Element("os")
    sub(element, "type", "hvm", arch="x86_64", machine=machine)
    if uefi is not None:
        sub(
            element,
            "loader",
            uefi.loader,
            readonly="yes",
            secure="yes" if uefi.secure_boot else "no",
            type="pflash",
        )
        sub(element, "nvram", uefi.nvram_path, template=uefi.nvram_template)
    sub(element, "bootmenu", enable="no")
    return element


def features(*, windows: bool, smm: bool) -> ET.Element:
    element = ET.Element("features")
    sub(element, "acpi")
    sub(element, "apic")
    if windows:
        hyperv = sub(element, "hyperv", mode="custom")
        sub(hyperv, "relaxed", state="on")
        sub(hyperv, "vapic", state="on")
        sub(hyperv, "spinlocks", state="on", retries="8191")
    if smm:
        sub(element, "smm", state="on")
    return element


def clock(*, windows: bool) -> ET.Element:
    element = ET.Element("clock", {"offset": "localtime" if windows else "utc"})
    sub(element, "timer", name="rtc", tickpolicy="catchup")
    sub(element, "timer", name="pit", tickpolicy="delay")
    sub(element, "timer", name="hpet", present="no")
    return element
