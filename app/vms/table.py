"""The VM page's model: VMs arranged in groups, each row with what the table shows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from databases import Database

from app.db.records import Record, fetch_records
from app.db.schema import pool_vms, pools
from app.hyper.agent import GuestInfo
from app.hyper.records import HypervisorRecord
from app.i18n.labels import state_label
from app.vms.guest_agents import GuestAgents
from app.vms.operations import Operation, OperationsRunner
from app.vms.records import Vm, list_hypervisors, list_vms, usernames
from app.vms.thumbnails import Thumbnails
from app.vms.versions import ImageVersion, all_versions

STATE_STYLES = {
    "running": "success",
    "paused": "warning",
    "pmsuspended": "warning",
    "shutoff": "secondary",
    "crashed": "danger",
    "missing": "danger",
    "unknown": "light",
}


@dataclass
class VmRow:
    vm: Vm
    hypervisor: str
    user: str | None = None
    pool: str | None = None
    pool_id: int | None = None
    thumbnail: int | None = None
    operation: Operation | None = None
    children: list[VmRow] = field(default_factory=list)
    # What the guest's QEMU agent reports, if it runs one.
    guest: GuestInfo | None = None
    # Image versions: a VDI machine's ("v2"), an initial's target ("v3"), and where it is going.
    version: str | None = None
    target: str | None = None

    @property
    def behind(self) -> bool:
        return self.target is not None and self.version != self.target

    @property
    def on_target(self) -> int:
        return sum(1 for child in self.children if not child.behind)

    @property
    def group(self) -> str:
        """The ``<tbody>`` this row belongs to."""
        if self.vm.kind == "vdi" and self.vm.parent_id is not None:
            return f"initial-{self.vm.parent_id}"
        if self.vm.kind == "initial":
            return f"initial-{self.vm.id}"
        return {"source": "sources", "unclassified": "unclassified"}.get(self.vm.kind, "simple")

    @property
    def state_style(self) -> str:
        return STATE_STYLES.get(self.vm.state, "light")

    @property
    def state_label(self) -> str:
        return state_label(self.vm.state)


@dataclass
class VmTable:
    initials: list[VmRow]
    sources: list[VmRow]
    simple: list[VmRow]
    unclassified: list[VmRow]
    hypervisors: list[HypervisorRecord]
    operations: list[Operation]

    @property
    def empty(self) -> bool:
        return not (self.initials or self.sources or self.simple or self.unclassified)

    @property
    def count(self) -> int:
        return (
            sum(1 + len(row.children) for row in self.initials)
            + len(self.sources)
            + len(self.simple)
            + len(self.unclassified)
        )


def _label(versions: Mapping[int, ImageVersion], version_id: int | None) -> str | None:
    version = versions.get(version_id) if version_id is not None else None
    return version.label if version is not None else None


def _versions_of(vm: Vm, by_id: Mapping[int, Vm], versions: Mapping[int, ImageVersion]) -> dict[str, Any]:
    """The version fields of a row: its own and its target (an initial's, or a child's initial's)."""
    if vm.kind == "initial":
        return {"target": _label(versions, vm.target_version_id)}
    parent = by_id.get(vm.parent_id) if vm.kind == "vdi" and vm.parent_id is not None else None
    if parent is None:
        return {}
    return {
        "version": _label(versions, vm.image_version_id),
        "target": _label(versions, parent.target_version_id),
    }


async def build_table(
    db: Database, operations: OperationsRunner, thumbnails: Thumbnails, agents: GuestAgents | None = None
) -> VmTable:
    vms = await list_vms(db)
    by_id = {vm.id: vm for vm in vms}
    versions = await all_versions(db)
    hypervisors = await list_hypervisors(db)
    hv_names = {hv.id: hv.name for hv in hypervisors}
    users = await usernames(db, [vm.assigned_user_id for vm in vms if vm.assigned_user_id is not None])
    pooled = await pool_membership(db)
    active = await operations.recent(limit=200, active_only=True)
    by_op = {op.id: op for op in active}
    pictures = await thumbnails.versions([vm.id for vm in vms if vm.state == "running"])

    def row(vm: Vm) -> VmRow:
        return VmRow(
            vm=vm,
            hypervisor=hv_names.get(vm.hypervisor_id, f"#{vm.hypervisor_id}"),
            user=users.get(vm.assigned_user_id) if vm.assigned_user_id is not None else None,
            pool=pooled[vm.id][1] if vm.id in pooled else None,
            pool_id=pooled[vm.id][0] if vm.id in pooled else None,
            thumbnail=pictures.get(vm.id),
            operation=by_op.get(vm.operation_id) if vm.operation_id is not None else None,
            guest=agents.get(vm.id) if agents is not None else None,
            **_versions_of(vm, by_id, versions),
        )

    initials = {vm.id: row(vm) for vm in vms if vm.kind == "initial"}
    sources: list[VmRow] = []
    simple: list[VmRow] = []
    unclassified: list[VmRow] = []
    for vm in vms:
        if vm.kind == "initial":
            continue
        if vm.kind == "vdi" and vm.parent_id in initials:
            initials[vm.parent_id].children.append(row(vm))
        elif vm.kind == "source":
            sources.append(row(vm))
        elif vm.kind == "unclassified":
            unclassified.append(row(vm))
        else:
            simple.append(row(vm))
    return VmTable(
        initials=list(initials.values()),
        sources=sources,
        simple=simple,
        unclassified=unclassified,
        hypervisors=hypervisors,
        operations=active,
    )


@dataclass(frozen=True)
class _PoolOfVm(Record):
    vm_id: int
    id: int
    name: str


async def pool_membership(db: Database) -> dict[int, tuple[int, str]]:
    """VM id -> (pool id, pool name) of every VM in a pool."""
    rows = await fetch_records(
        db,
        _PoolOfVm,
        sa.select(pool_vms.c.vm_id, pools.c.id, pools.c.name).select_from(
            pool_vms.join(pools, pools.c.id == pool_vms.c.pool_id)
        ),
    )
    return {row.vm_id: (row.id, row.name) for row in rows}
