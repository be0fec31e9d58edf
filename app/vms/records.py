"""The ``vms`` table as the rest of the VM code sees it: small queries, plain values.

A VM row leaves this module as a :class:`Vm` (frozen dataclass) so that domain
code and templates share one typed shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from databases import Database

from app.clock import utcnow
from app.db.records import Named, Record, UserRecord, fetch_record, fetch_records
from app.db.schema import hypervisors, image_versions, operations, users, vms
from app.hyper.records import HypervisorRecord
from app.vms.domain_xml import DevicePolicy

# Kinds that can hold VDI children, and the order groups appear in on the VM page.
KIND_ORDER = ("initial", "source", "simple", "unclassified")


@dataclass(frozen=True)
class Vm(Record):
    __table__ = vms

    id: int
    name: str
    uuid: str | None
    hypervisor_id: int
    kind: str
    parent_id: int | None
    maintenance: bool
    locked: bool
    volatile: bool
    state: str
    state_changed_at: datetime | None
    os_type: str
    vcpu_sockets: int
    vcpu_cores: int
    memory_mib: int
    disk_path: str
    disk_size_gib: int
    disk_format: str
    disk_imported: bool
    iso_path: str | None
    boot_order: str
    network: str | None
    mac_address: str | None
    fixed_address: str | None
    machine: str
    firmware: str
    secure_boot: bool
    tpm: bool
    domain_type: str
    cpu_mode: str
    disk_bus: str
    disk_cache: str
    nic_model: str
    network_type: str
    iso2_path: str | None
    sound_model: str
    video_heads: int
    clipboard: bool
    file_transfer: bool
    usb_redirect: int
    operation_id: int | None
    assigned_user_id: int | None
    last_user_id: int | None
    image_version_id: int | None
    target_version_id: int | None
    created_at: datetime | None

    @property
    def boot_devices(self) -> tuple[str, ...]:
        return tuple(part for part in self.boot_order.split(",") if part) or ("hd",)

    @property
    def policy(self) -> DevicePolicy:
        return DevicePolicy(self.clipboard, self.file_transfer, self.usb_redirect)

    @property
    def running(self) -> bool:
        return self.state in ("running", "paused", "pmsuspended")

    def summary(self) -> dict[str, Any]:
        """The JSON shape of a VM (API answers and ``vm`` live messages)."""
        data = asdict(self)
        for key in ("state_changed_at", "created_at"):
            value = data[key]
            data[key] = value.isoformat() if value is not None else None
        data["boot_order"] = list(self.boot_devices)
        return data


async def get_vm(db: Database, vm_id: int) -> Vm | None:
    return await fetch_record(db, Vm, vms.select().where(vms.c.id == vm_id))


async def vm_by_name(db: Database, name: str) -> Vm | None:
    return await fetch_record(db, Vm, vms.select().where(vms.c.name == name))


async def list_vms(db: Database, *, hypervisor_id: int | None = None) -> list[Vm]:
    query = vms.select().order_by(vms.c.name)
    if hypervisor_id is not None:
        query = query.where(vms.c.hypervisor_id == hypervisor_id)
    return await fetch_records(db, Vm, query)


async def vms_by_ids(db: Database, ids: Iterable[int]) -> list[Vm]:
    wanted = list(ids)
    if not wanted:
        return []
    return await fetch_records(db, Vm, vms.select().where(vms.c.id.in_(wanted)).order_by(vms.c.name))


async def children_of(db: Database, parent_id: int, *, kind: str = "vdi") -> list[Vm]:
    return await fetch_records(
        db, Vm, vms.select().where(vms.c.parent_id == parent_id, vms.c.kind == kind).order_by(vms.c.name)
    )


async def taken_names(db: Database, names: Iterable[str]) -> list[str]:
    wanted = list(names)
    if not wanted:
        return []
    rows = await fetch_records(db, Named, sa.select(vms.c.name).where(vms.c.name.in_(wanted)))
    return sorted(row.name for row in rows)


async def insert_vm(db: Database, **values: Any) -> int:
    values.setdefault("created_at", utcnow())
    vm_id: int = await db.execute(vms.insert().values(**values))
    return vm_id


async def update_vm(db: Database, vm_id: int, **values: Any) -> None:
    await db.execute(vms.update().where(vms.c.id == vm_id).values(**values))


async def update_vms(db: Database, vm_ids: Iterable[int], **values: Any) -> None:
    ids = list(vm_ids)
    if ids:
        await db.execute(vms.update().where(vms.c.id.in_(ids)).values(**values))


async def delete_vm_row(db: Database, vm_id: int) -> None:
    # Children of a deleted parent (initials of a source) lose the link, not their rows.
    await db.execute(vms.update().where(vms.c.parent_id == vm_id).values(parent_id=None))
    # An initial's versions go with it (SQLite does not enforce the cascade).
    await db.execute(image_versions.delete().where(image_versions.c.initial_id == vm_id))
    await db.execute(operations.update().where(operations.c.vm_id == vm_id).values(vm_id=None))
    await db.execute(vms.delete().where(vms.c.id == vm_id))


async def list_hypervisors(db: Database) -> list[HypervisorRecord]:
    return await fetch_records(db, HypervisorRecord, hypervisors.select().order_by(hypervisors.c.name))


async def usernames(db: Database, user_ids: Iterable[int]) -> Mapping[int, str]:
    ids = list({uid for uid in user_ids if uid is not None})
    if not ids:
        return {}
    found = await fetch_records(db, UserRecord, users.select().where(users.c.id.in_(ids)))
    return {user.id: user.username for user in found}
