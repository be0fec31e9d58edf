"""A fleet of VM rows for the VM table's tests and its benchmark (bench/vm_table.py).

The rows belong to *rows-only* hypervisors: SSH records whose host key nobody
confirmed, which the dashboard never connects to, so the rows stay as written
(nothing reconciles them with libvirt) and a test or benchmark can play any state
and any burst of live changes. Each hypervisor has a golden image, an initial
machine and its VDI desktops in a pool; a few simple VMs and users holding
desktops make the filters worth having. Rows are written after the dashboard
started (its registry does not know these hypervisors, so never announces them).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import sqlalchemy as sa
from databases import Database

from app.clock import utcnow
from app.db.schema import hypervisors, pool_vms, users, vms
from app.vms.records import Vm, vms_by_ids
from tests.broker.records import add_pool

# States of the VDI desktops, in turn: mostly running, some off, a few that need a look.
STATES = ("running", "running", "running", "shutoff", "running", "shutoff", "paused", "running", "crashed")


@dataclass
class Fleet:
    hypervisor_ids: list[int] = field(default_factory=list)
    initial_ids: list[int] = field(default_factory=list)
    desktop_ids: list[int] = field(default_factory=list)
    simple_ids: list[int] = field(default_factory=list)
    pool_ids: list[int] = field(default_factory=list)
    user_ids: list[int] = field(default_factory=list)

    @property
    def vm_count(self) -> int:
        return 2 * len(self.hypervisor_ids) + len(self.desktop_ids) + len(self.simple_ids)


async def build_fleet(
    db: Database, total: int, *, hosts: int = 4, simple: int = 20, holders: int = 200, prefix: str = "fl"
) -> Fleet:
    """``total`` VM rows: per host a source and an initial with its desktops in a pool, plus ``simple``."""
    fleet = Fleet()
    now = utcnow()
    for index in range(hosts):
        fleet.hypervisor_ids.append(
            int(
                await db.execute(
                    hypervisors.insert().values(
                        name=f"{prefix}-host{index + 1}",
                        transport="ssh",
                        address=f"192.0.2.{index + 1}",
                        host_key_confirmed=False,
                        state="unknown",
                        state_reason="rows only: never connected",
                        created_at=now,
                    )
                )
            )
        )
    desktops = max(0, total - 2 * hosts - simple)
    user_rows = [
        {"username": f"{prefix}-user{index:04}", "source": "local", "role": "client", "created_at": now}
        for index in range(holders)
    ]
    if user_rows:
        await db.execute_many(users.insert(), user_rows)
        rows = await db.fetch_all(
            sa.select(users.c.id).where(users.c.username.like(f"{prefix}-user%")).order_by(users.c.id)
        )
        fleet.user_ids = [int(row["id"]) for row in rows]
    holders_left = iter(fleet.user_ids)
    states = itertools.cycle(STATES)
    for index, hv_id in enumerate(fleet.hypervisor_ids):
        base = f"/var/lib/kvm-vdi/images/{prefix}{index + 1}"
        source = await _vm(
            db, f"{prefix}-gold{index + 1}", hv_id, "source", "shutoff", disk=f"{base}-gold.qcow2"
        )
        initial = await _vm(
            db, f"{prefix}-base{index + 1}", hv_id, "initial", "shutoff", disk=f"{base}.qcow2", parent=source
        )
        fleet.initial_ids.append(initial)
        count = desktops // hosts + (1 if index < desktops % hosts else 0)
        rows_ = []
        for number in range(1, count + 1):
            state = next(states)
            holder = next(holders_left, None) if state == "running" and number % 3 == 0 else None
            rows_.append(
                {
                    "name": f"{prefix}{index + 1}-desk{number:04}",
                    "hypervisor_id": hv_id,
                    "kind": "vdi",
                    "parent_id": initial,
                    "state": state,
                    "disk_path": f"{base}-desk{number:04}.qcow2",
                    "memory_mib": 2048,
                    "volatile": number % 4 == 0,
                    "maintenance": number % 50 == 0,
                    "assigned_user_id": holder,
                    "created_at": now,
                }
            )
        if rows_:
            await db.execute_many(vms.insert(), rows_)
        ids = [
            int(row["id"])
            for row in await db.fetch_all(
                sa.select(vms.c.id).where(vms.c.parent_id == initial).order_by(vms.c.id)
            )
        ]
        fleet.desktop_ids += ids
        fleet.pool_ids.append(await add_pool(db, f"{prefix} pool {index + 1}", [], []))
        if ids:
            await db.execute_many(
                pool_vms.insert(), [{"pool_id": fleet.pool_ids[-1], "vm_id": vm_id} for vm_id in ids]
            )
    for number in range(1, simple + 1):
        hv_id = fleet.hypervisor_ids[number % hosts]
        fleet.simple_ids.append(
            await _vm(
                db, f"{prefix}-simple{number:03}", hv_id, "simple", "running" if number % 2 else "shutoff"
            )
        )
    return fleet


async def _vm(
    db: Database, name: str, hv_id: int, kind: str, state: str, *, disk: str = "", parent: int | None = None
) -> int:
    vm_id = await db.execute(
        vms.insert().values(
            name=name,
            hypervisor_id=hv_id,
            kind=kind,
            state=state,
            disk_path=disk,
            parent_id=parent,
            memory_mib=4096,
            created_at=utcnow(),
        )
    )
    return int(vm_id)


async def set_states(db: Database, vm_ids: list[int], state: str) -> list[Vm]:
    """Write a new state for these VMs (one statement); the rows as the live messages carry them."""
    await db.execute(vms.update().where(vms.c.id.in_(vm_ids)).values(state=state, state_changed_at=utcnow()))
    return await vms_by_ids(db, vm_ids)
