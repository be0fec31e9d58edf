"""Reading leases: who holds which desktop, since when, from where."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from databases import Database

from app.db.records import LeaseRecord, fetch_record, fetch_records
from app.db.schema import hypervisors, leases, pools, users, vms


@dataclass(frozen=True)
class ActiveSession(LeaseRecord):
    """A lease that has not ended, with the names the Sessions page shows."""

    username: str = ""
    source: str = ""
    display_name: str = ""
    vm_name: str = ""
    vm_state: str = ""
    pool_name: str | None = None
    hypervisor_name: str = ""


def heartbeat_interval(lease_timeout_min: int) -> int:
    """Seconds between client heartbeats: a third of the lease, between 10 s and 60 s."""
    return max(10, min(60, lease_timeout_min * 60 // 3))


async def active_sessions(db: Database) -> list[ActiveSession]:
    return await fetch_records(
        db,
        ActiveSession,
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
        .order_by(leases.c.started_at),
    )


async def get_lease(db: Database, lease_id: int) -> LeaseRecord | None:
    return await fetch_record(db, LeaseRecord, leases.select().where(leases.c.id == lease_id))


async def expired_leases(db: Database, now: datetime) -> list[LeaseRecord]:
    """Leases past their expiry at ``now`` that have not ended."""
    return await fetch_records(
        db, LeaseRecord, leases.select().where(leases.c.ended_at.is_(None), leases.c.expires_at <= now)
    )


async def active_lease(db: Database, vm_id: int, user_id: int) -> LeaseRecord | None:
    """The user's lease on that desktop if it has not ended: what entitles them to its console."""
    return await fetch_record(
        db,
        LeaseRecord,
        leases.select().where(
            leases.c.vm_id == vm_id, leases.c.user_id == user_id, leases.c.ended_at.is_(None)
        ),
    )
