"""Reading leases: who holds which desktop, since when, from where."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from databases import Database

from app.clock import utcnow
from app.db.schema import hypervisors, leases, pools, users, vms


def heartbeat_interval(lease_timeout_min: int) -> int:
    """Seconds between client heartbeats: a third of the lease, between 10 s and 60 s."""
    return max(10, min(60, lease_timeout_min * 60 // 3))


async def active_sessions(db: Database) -> list[Any]:
    return list(
        await db.fetch_all(
            sa.select(
                leases,
                users.c.username,
                users.c.source,
                users.c.display_name,
                vms.c.name.label("vm_name"),
                vms.c.state.label("vm_state"),
                pools.c.name.label("pool_name"),
                hypervisors.c.name.label("hypervisor_name"),
            )
            .select_from(
                leases.join(users, users.c.id == leases.c.user_id)
                .join(vms, vms.c.id == leases.c.vm_id)
                .join(hypervisors, hypervisors.c.id == vms.c.hypervisor_id)
                .outerjoin(pools, pools.c.id == leases.c.pool_id)
            )
            .where(leases.c.ended_at.is_(None))
            .order_by(leases.c.started_at)
        )
    )


async def user_leases(db: Database, user_id: int) -> list[Any]:
    return list(
        await db.fetch_all(
            sa.select(leases, vms.c.name.label("vm_name"), vms.c.state.label("vm_state"))
            .select_from(leases.join(vms, vms.c.id == leases.c.vm_id))
            .where(leases.c.user_id == user_id, leases.c.ended_at.is_(None))
            .order_by(leases.c.started_at)
        )
    )


async def get_lease(db: Database, lease_id: int) -> Any | None:
    return await db.fetch_one(leases.select().where(leases.c.id == lease_id))


async def expired_lease_ids(db: Database) -> list[int]:
    rows = await db.fetch_all(
        sa.select(leases.c.id).where(leases.c.ended_at.is_(None), leases.c.expires_at <= utcnow())
    )
    return [row.id for row in rows]
