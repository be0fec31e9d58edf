"""A point-in-time copy of a running domain's disk: libvirt's push-mode backup job.

Blocking functions of a libvirt connection, run on its worker threads. The copy is
libvirt's full backup (QEMU's ``blockdev-backup`` with ``sync=full``): from the
moment it begins, QEMU copies each block the guest is about to overwrite first, so
the target holds the disk exactly as it was then (its whole backing chain flattened),
while the guest runs on. The guest's file systems are frozen through its agent for
the instant the job begins when an agent answers (the copy is then
filesystem-consistent); without one the copy is as after a power cut
(crash-consistent). The target is a qcow2 file the caller made beforehand at the
disk's size (``REUSE_EXTERNAL``): it keeps its owner, and libvirt only lends it to
QEMU for the job.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

import libvirt

from app.hyper.agent import NO_AGENT
from app.hyper.domains import lookup
from app.hyper.errors import HypervisorError
from app.i18n import gettext as _


@dataclass(frozen=True)
class BackupJob:
    """Where the domain's backup job stands; ``active`` False once none runs."""

    active: bool
    processed: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.processed / self.total if self.total else 0.0


def disk_target(domain: libvirt.virDomain, disk_path: str) -> tuple[str, list[str]]:
    """The target device (``vda`` ...) of the running domain's disk at ``disk_path``, and the others."""
    root = ET.fromstring(domain.XMLDesc(0))  # noqa: S314 - libvirt's own output
    found: str | None = None
    others: list[str] = []
    for disk in root.findall("devices/disk"):
        target = disk.find("target")
        dev = target.get("dev") if target is not None else None
        if not dev:
            continue
        source = disk.find("source")
        if found is None and source is not None and source.get("file") == disk_path:
            found = dev
        else:
            others.append(dev)
    if found is None:
        raise HypervisorError(
            _("{name} does not run on the disk {path}").format(name=domain.name(), path=disk_path)
        )
    return found, others


def backup_xml(dev: str, target: str, others: list[str]) -> str:
    """Back up ``dev`` into the existing qcow2 ``target``; every other disk is left out."""
    lines = ["<domainbackup mode='push'><disks>"]
    lines.append(
        f"<disk name={quoteattr(dev)} backup='yes' type='file'>"
        f"<driver type='qcow2'/><target file={quoteattr(target)}/></disk>"
    )
    lines += [f"<disk name={quoteattr(other)} backup='no'/>" for other in others]
    lines.append("</disks></domainbackup>")
    return "".join(lines)


def _freeze(domain: libvirt.virDomain) -> bool:
    """Freeze the guest's file systems through its agent; False when no agent answers."""
    try:
        domain.fsFreeze(None, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in NO_AGENT:
            return False
        raise
    return True


def begin_backup(conn: libvirt.virConnect, name: str, disk_path: str, target: str) -> bool:
    """Begin copying the running domain's disk at ``disk_path`` as it is now into ``target``.

    True when the guest's file systems were frozen for the start (filesystem-consistent),
    False when no guest agent answered (crash-consistent). The guest never stops.
    """
    domain = lookup(conn, name)
    dev, others = disk_target(domain, disk_path)
    frozen = _freeze(domain)
    try:
        domain.backupBegin(
            backup_xml(dev, target, others), None, libvirt.VIR_DOMAIN_BACKUP_BEGIN_REUSE_EXTERNAL
        )
    finally:
        if frozen:
            domain.fsThaw(None, 0)
    return frozen


def _is_backup(stats: dict[str, object]) -> bool:
    return stats.get("operation") == libvirt.VIR_DOMAIN_JOB_OPERATION_BACKUP


def backup_job(conn: libvirt.virConnect, name: str) -> BackupJob:
    """How far the domain's backup job is (inactive when the domain runs none)."""
    stats = lookup(conn, name).jobStats(0)
    if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE or not _is_backup(stats):
        return BackupJob(active=False, processed=0, total=0)
    total = int(stats.get("disk_total") or stats.get("data_total") or 0)
    processed = int(stats.get("disk_processed") or stats.get("data_processed") or 0)
    return BackupJob(active=True, processed=processed, total=total)


def backup_outcome(conn: libvirt.virConnect, name: str) -> str:
    """How the domain's last backup job ended: ``completed``, ``failed``, ``cancelled`` or ``unknown``."""
    stats = lookup(conn, name).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    if not _is_backup(stats):
        return "unknown"
    return {
        libvirt.VIR_DOMAIN_JOB_COMPLETED: "completed",
        libvirt.VIR_DOMAIN_JOB_FAILED: "failed",
        libvirt.VIR_DOMAIN_JOB_CANCELLED: "cancelled",
    }.get(int(str(stats.get("type", -1))), "unknown")


def backup_targets(conn: libvirt.virConnect, name: str) -> list[str]:
    """The files the domain's running backup job writes (none when no backup job runs)."""
    domain = lookup(conn, name)
    if not _is_backup(domain.jobStats(0)):
        return []
    try:
        xml = domain.backupGetXMLDesc(0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_BACKUP:  # it ended meanwhile
            return []
        raise
    root = ET.fromstring(xml)  # noqa: S314 - libvirt's own output
    return [file for target in root.findall("disks/disk/target") if (file := target.get("file"))]


def abort_backup(conn: libvirt.virConnect, name: str) -> bool:
    """Stop the domain's backup job, if one runs; True if there was one."""
    domain = lookup(conn, name)
    if not _is_backup(domain.jobStats(0)):
        return False
    try:
        domain.abortJob()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID:  # it ended meanwhile
            return False
        raise
    return True
