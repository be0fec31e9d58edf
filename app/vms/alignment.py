"""Before each start, the persistent definition is brought in line with what the dashboard decided.

A start reads the definition once and redefines it only when something differs:

* the disk it boots from (the VM's disk, or its volatile overlay) and that file's format (an
  imported raw disk boots volatile from a qcow2 overlay),
* the UEFI variable store (the VM's own, or a volatile boot's throw-away copy),
* the device policy: clipboard and file transfer in ``<graphics>``, and the number
  of USB redirection slots. So a policy changed on a pool reaches each desktop at
  its next boot, and a definition edited by hand cannot keep what the policy forbids.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from app.vms.domain_xml import DevicePolicy


@dataclass(frozen=True)
class BootTarget:
    disk_source: str | None
    nvram_path: str | None
    policy: DevicePolicy
    # The disk file's format; None leaves the definition's own (a domain adopted as it is).
    disk_format: str | None = None


def _set_disk(root: ET.Element, disk_source: str, disk_format: str | None) -> bool:
    for disk in root.findall("devices/disk"):
        if disk.get("device", "disk") != "disk":
            continue
        changed = False
        driver = disk.find("driver")
        if disk_format is not None and (driver is None or driver.get("type") != disk_format):
            if driver is None:
                driver = ET.SubElement(disk, "driver", {"name": "qemu"})
            driver.set("type", disk_format)
            changed = True
        source = disk.find("source")
        if source is not None and source.get("file") == disk_source and disk.get("type") == "file":
            return changed
        if source is None:
            source = ET.SubElement(disk, "source")
        source.attrib.clear()
        source.set("file", disk_source)
        disk.set("type", "file")
        return True
    return False


def _set_nvram(root: ET.Element, nvram_path: str) -> bool:
    nvram = root.find("os/nvram")
    if nvram is None or nvram.text == nvram_path:
        return False
    nvram.text = nvram_path
    return True


def _set_policy(root: ET.Element, policy: DevicePolicy) -> bool:
    changed = False
    for graphics in root.findall("devices/graphics[@type='spice']"):
        for tag, attribute, allowed in (
            ("clipboard", "copypaste", policy.clipboard),
            ("filetransfer", "enable", policy.file_transfer),
        ):
            wanted = "yes" if allowed else "no"
            element = graphics.find(tag)
            if element is None:
                element = ET.SubElement(graphics, tag)
            if element.get(attribute) != wanted:
                element.set(attribute, wanted)
                changed = True
    devices = root.find("devices")
    if devices is None:
        return changed
    slots = devices.findall("redirdev[@type='spicevmc']")
    if len(slots) > policy.usb_redirections:
        for slot in slots[policy.usb_redirections :]:
            devices.remove(slot)
        changed = True
    elif len(slots) < policy.usb_redirections:
        for _ in range(policy.usb_redirections - len(slots)):
            ET.SubElement(devices, "redirdev", {"bus": "usb", "type": "spicevmc"})
        changed = True
    return changed


def align(xml: str, target: BootTarget) -> str | None:
    """The definition with ``target`` applied, or ``None`` when it already matches."""
    root = ET.fromstring(xml)  # noqa: S314 - libvirt's own output
    changed = False
    if target.disk_source is not None:
        changed |= _set_disk(root, target.disk_source, target.disk_format)
    if target.nvram_path is not None:
        changed |= _set_nvram(root, target.nvram_path)
    changed |= _set_policy(root, target.policy)
    return ET.tostring(root, encoding="unicode") if changed else None


def policy_of(xml: str) -> DevicePolicy:
    """The device policy a definition (or a running domain) really has."""
    root = ET.fromstring(xml)  # noqa: S314 - libvirt's own output
    graphics = root.find("devices/graphics[@type='spice']")
    clipboard = file_transfer = True  # SPICE's defaults when the elements are absent
    if graphics is not None:
        element = graphics.find("clipboard")
        clipboard = element is None or element.get("copypaste") != "no"
        element = graphics.find("filetransfer")
        file_transfer = element is None or element.get("enable") != "no"
    slots = len(root.findall("devices/redirdev[@type='spicevmc']"))
    return DevicePolicy(clipboard=clipboard, file_transfer=file_transfer, usb_redirections=slots)
