"""Domain snapshots as plain blocking functions of a libvirt connection (run on its worker threads).

They are libvirt's *internal* snapshots: kept inside the qcow2 disk itself, taken of
a running domain with its memory (the guest resumes where it was) or of a stopped
one (disk only), and reverted and deleted in place. They suit the project's disk
layout, one qcow2 per desktop with no chain to grow, and work with the libvirt of
Debian 12, which can create external snapshots but neither revert nor delete them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime

import libvirt

from app.hyper.domains import lookup


@dataclass(frozen=True)
class SnapshotInfo:
    name: str
    description: str
    # Naive UTC, like every stored timestamp.
    created_at: datetime
    # The domain's state when it was taken: "running" (memory included) or "shutoff" (disk only) ...
    state: str
    parent: str | None
    current: bool

    @property
    def with_memory(self) -> bool:
        return self.state in ("running", "paused")


def snapshot_xml(name: str, description: str) -> str:
    root = ET.Element("domainsnapshot")
    ET.SubElement(root, "name").text = name
    if description:
        ET.SubElement(root, "description").text = description
    return ET.tostring(root, encoding="unicode")


def _info(snapshot: libvirt.virDomainSnapshot) -> SnapshotInfo:
    root = ET.fromstring(snapshot.getXMLDesc(0))  # noqa: S314 - libvirt's own output
    created = int(root.findtext("creationTime") or "0")
    parent = root.findtext("parent/name")
    return SnapshotInfo(
        name=root.findtext("name") or snapshot.getName(),
        description=root.findtext("description") or "",
        created_at=datetime.fromtimestamp(created, UTC).replace(tzinfo=None),
        state=root.findtext("state") or "unknown",
        parent=parent or None,
        current=bool(snapshot.isCurrent(0)),
    )


def list_snapshots(conn: libvirt.virConnect, name: str) -> list[SnapshotInfo]:
    """The domain's snapshots, oldest first."""
    found = [_info(snapshot) for snapshot in lookup(conn, name).listAllSnapshots(0)]
    return sorted(found, key=lambda s: (s.created_at, s.name))


def create_snapshot(conn: libvirt.virConnect, name: str, snapshot: str, description: str) -> SnapshotInfo:
    """Take snapshot ``snapshot`` (with memory when the domain runs; the guest pauses meanwhile)."""
    created = lookup(conn, name).snapshotCreateXML(snapshot_xml(snapshot, description), 0)
    return _info(created)


def revert_snapshot(conn: libvirt.virConnect, name: str, snapshot: str) -> None:
    """Put the domain back where the snapshot was: running again when taken running, else stopped."""
    domain = lookup(conn, name)
    domain.revertToSnapshot(domain.snapshotLookupByName(snapshot, 0), 0)


def delete_snapshot(conn: libvirt.virConnect, name: str, snapshot: str) -> None:
    """Delete one snapshot; the ones taken after it keep their content."""
    lookup(conn, name).snapshotLookupByName(snapshot, 0).delete(0)
