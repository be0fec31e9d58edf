"""Golden image versions: the ``image_versions`` table and where each initial's children stand.

An initial machine publishes its image as numbered versions (``<name>.v<N>.qcow2``
in the hypervisor's images directory), standalone qcow2 files that nothing writes
once published. Its VDI machines are overlays of one version each; the initial's
*target* version is what new and reset machines get. The initial's own disk is a
working overlay of a version too, so starting it to edit never touches a disk
that children run on. VDI machines made before versions existed run on the
initial's own disk (``image_version_id`` NULL) until the first publication adopts
that disk as a version.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from databases import Database

from app.clock import utcnow
from app.db.records import Record, fetch_records
from app.db.schema import image_versions, vms
from app.vms.records import Vm, children_of, get_vm

ORIGINS = ("source", "initial", "adopted")


def version_path(images_dir: str, initial_name: str, number: int) -> str:
    return posixpath.join(images_dir, f"{initial_name}.v{number}.qcow2")


def edit_path(images_dir: str, initial_name: str) -> str:
    """The initial's working disk when its usual name is taken by a disk children run on."""
    return posixpath.join(images_dir, f"{initial_name}.edit.qcow2")


@dataclass(frozen=True)
class ImageVersion(Record):
    __table__ = image_versions

    id: int
    initial_id: int
    number: int
    path: str
    origin: str
    origin_name: str
    size_bytes: int | None
    note: str
    created_by: str
    created_at: datetime | None

    @property
    def label(self) -> str:
        return f"v{self.number}"

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "number": self.number,
            "label": self.label,
            "path": self.path,
            "origin": self.origin,
            "origin_name": self.origin_name,
            "size_bytes": self.size_bytes,
            "note": self.note,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }


async def versions_of(db: Database, initial_id: int) -> list[ImageVersion]:
    return await fetch_records(
        db,
        ImageVersion,
        image_versions.select()
        .where(image_versions.c.initial_id == initial_id)
        .order_by(image_versions.c.number),
    )


async def all_versions(db: Database) -> dict[int, ImageVersion]:
    return {version.id: version for version in await fetch_records(db, ImageVersion, image_versions.select())}


async def insert_version(db: Database, **values: Any) -> int:
    values.setdefault("created_at", utcnow())
    version_id: int = await db.execute(image_versions.insert().values(**values))
    return version_id


async def delete_version_row(db: Database, version_id: int) -> None:
    await db.execute(image_versions.delete().where(image_versions.c.id == version_id))


@dataclass(frozen=True)
class ImageState:
    """An initial machine, its versions and its VDI machines, read together."""

    initial: Vm
    versions: list[ImageVersion]
    children: list[Vm]

    def version(self, version_id: int | None) -> ImageVersion | None:
        return next((v for v in self.versions if v.id == version_id), None)

    @property
    def target(self) -> ImageVersion | None:
        return self.version(self.initial.target_version_id)

    @property
    def next_number(self) -> int:
        return max((v.number for v in self.versions), default=0) + 1

    def base_of(self, vm: Vm) -> str:
        """The file a VDI machine's overlay (or the initial's working disk) is backed by."""
        version = self.version(vm.image_version_id)
        return version.path if version is not None else self.initial.disk_path

    def behind(self, vm: Vm) -> bool:
        """Whether the machine should move to the target version (there is one and it is elsewhere)."""
        target = self.target
        return target is not None and vm.image_version_id != target.id

    def on(self, version: ImageVersion) -> list[Vm]:
        return [child for child in self.children if child.image_version_id == version.id]

    def dependents(self) -> list[Vm]:
        """VDI machines whose overlays read the initial's own disk: starting it would corrupt them."""
        own = self.initial.disk_path
        return [child for child in self.children if own and self.base_of(child) == own]

    @property
    def on_target(self) -> int:
        return sum(1 for child in self.children if not self.behind(child))

    def summary(self) -> dict[str, Any]:
        """The ``image`` live message and the versions API's answer."""
        target = self.target
        working = self.version(self.initial.image_version_id)
        return {
            "initial_id": self.initial.id,
            "initial": self.initial.name,
            "target_version_id": target.id if target else None,
            "target": target.label if target else None,
            "working_disk": {
                "path": self.initial.disk_path,
                "version": working.label if working else None,
                "children_depend": [child.name for child in self.dependents()],
            },
            "versions": [
                {
                    **version.summary(),
                    "target": target is not None and version.id == target.id,
                    "children": [child.name for child in self.on(version)],
                }
                for version in self.versions
            ],
            "children": [
                {
                    "id": child.id,
                    "name": child.name,
                    "state": child.state,
                    "version_id": child.image_version_id,
                    "version": (v.label if (v := self.version(child.image_version_id)) else None),
                    "behind": self.behind(child),
                    "held_by_user": child.assigned_user_id is not None,
                    "operation_id": child.operation_id,
                }
                for child in self.children
            ],
            "rollout": {"on_target": self.on_target, "total": len(self.children)},
        }


async def image_state(db: Database, initial_id: int) -> ImageState | None:
    initial = await get_vm(db, initial_id)
    if initial is None:
        return None
    return ImageState(initial, await versions_of(db, initial.id), await children_of(db, initial.id))


async def set_child_versions(db: Database, vm_ids: list[int], version_id: int) -> None:
    if vm_ids:
        await db.execute(vms.update().where(vms.c.id.in_(vm_ids)).values(image_version_id=version_id))
