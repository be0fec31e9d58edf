"""The VM's disk and its CD-ROM drives.

The disk is a qcow2 file (or an imported raw image) on one of three buses: ``virtio`` (fastest, needs the
virtio driver in Windows), ``sata`` (works everywhere) or ``scsi`` (virtio-scsi:
TRIM and many disks, needs the vioscsi driver). Two CD-ROM drives always exist,
empty or not, so that an installer and a driver disc can be inserted together and
media changed later: IDE on the ``pc`` machine, SATA on ``q35`` (which has no IDE).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Literal

from app.vms.devices._xml import boot, sub

DiskBus = Literal["virtio", "sata", "scsi"]
DiskCache = Literal["default", "none", "writeback", "writethrough", "directsync", "unsafe"]
DiskFormat = Literal["qcow2", "raw"]
Machine = Literal["pc", "q35"]

DISK_BUSES: tuple[DiskBus, ...] = ("virtio", "sata", "scsi")
DISK_CACHES: tuple[DiskCache, ...] = ("default", "none", "writeback", "writethrough", "directsync", "unsafe")
DISK_FORMATS: tuple[DiskFormat, ...] = ("qcow2", "raw")
CDROM_SLOTS = 2
_DISK_TARGETS = {"virtio": "vda", "sata": "sda", "scsi": "sda"}
# The CD-ROMs never share a target with the disk: sdb/sdc on SATA, hdc/hdd on IDE.
_CDROM_TARGETS = {"ide": ("hdc", "hdd"), "sata": ("sdb", "sdc")}


@dataclass(frozen=True)
class DiskSpec:
    source: str
    bus: DiskBus = "virtio"
    cache: DiskCache = "default"
    boot_index: int | None = None
    format: DiskFormat = "qcow2"


@dataclass(frozen=True)
class CdromSpec:
    slot: int
    machine: Machine = "pc"
    iso_path: str | None = None
    boot_index: int | None = None

    @property
    def bus(self) -> str:
        return "sata" if self.machine == "q35" else "ide"

    @property
    def target(self) -> str:
        return _CDROM_TARGETS[self.bus][self.slot]


def disk(spec: DiskSpec) -> ET.Element:
    element = ET.Element("disk", {"type": "file", "device": "disk"})
    driver = {"name": "qemu", "type": spec.format, "discard": "unmap"}
    if spec.cache != "default":
        driver["cache"] = spec.cache
    sub(element, "driver", **driver)
    sub(element, "source", file=spec.source)
    sub(element, "target", dev=_DISK_TARGETS[spec.bus], bus=spec.bus)
    boot(element, spec.boot_index)
    return element


def scsi_controller() -> ET.Element:
    """virtio-scsi, the controller a ``scsi`` disk sits on."""
    return ET.Element("controller", {"type": "scsi", "index": "0", "model": "virtio-scsi"})


def cdrom(spec: CdromSpec) -> ET.Element:
    """A CD-ROM drive; without ``iso_path`` an empty drive (media can be inserted later)."""
    element = ET.Element("disk", {"type": "file", "device": "cdrom"})
    sub(element, "driver", name="qemu", type="raw")
    if spec.iso_path is not None:
        sub(element, "source", file=spec.iso_path)
    sub(element, "target", dev=spec.target, bus=spec.bus)
    sub(element, "readonly")
    boot(element, spec.boot_index)
    return element
