"""The figures of the overview page: what exists, what runs, what needs attention."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from databases import Database

from app.db.schema import hypervisors, leases, pools, vms


@dataclass(frozen=True)
class Summary:
    hypervisors_total: int
    hypervisors_up: int
    hypervisors_down: int
    hypervisors_maintenance: int
    vms_total: int
    vms_running: int
    pools_total: int
    sessions_active: int

    @property
    def hypervisors_unknown(self) -> int:
        return self.hypervisors_total - self.hypervisors_up - self.hypervisors_down

    def next_step(self) -> str | None:
        """What a newcomer should do next, in the order a deployment grows."""
        if self.hypervisors_total == 0:
            return "hypervisor"
        if self.vms_total == 0:
            return "vm"
        if self.pools_total == 0:
            return "pool"
        return None


async def _count(db: Database, query: Any) -> int:
    return int(await db.fetch_val(query) or 0)


async def summarize(db: Database) -> Summary:
    count = sa.func.count()
    return Summary(
        hypervisors_total=await _count(db, sa.select(count).select_from(hypervisors)),
        hypervisors_up=await _count(db, sa.select(count).where(hypervisors.c.state == "up")),
        hypervisors_down=await _count(db, sa.select(count).where(hypervisors.c.state == "down")),
        hypervisors_maintenance=await _count(
            db, sa.select(count).where(hypervisors.c.maintenance == sa.true())
        ),
        vms_total=await _count(db, sa.select(count).select_from(vms)),
        vms_running=await _count(db, sa.select(count).where(vms.c.state == "running")),
        pools_total=await _count(db, sa.select(count).select_from(pools)),
        sessions_active=await _count(db, sa.select(count).where(leases.c.ended_at.is_(None))),
    )
