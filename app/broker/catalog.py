"""What each user sees of the pools: tiles with size, free desktops and their own desktop,
where the user goes straight after log-in; and the live ``pool`` / ``lease`` events that keep
those tiles current."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from databases import Database

from app.broker import pools as pool_store
from app.broker.preferences import STRAIGHT_TO_DESKTOP, get_flag
from app.db.records import LeaseRecord, PoolRecord, Record, fetch_records
from app.db.schema import pool_vms, pools, vms
from app.live.hub import LiveHub
from app.vms.snapshots import SNAPSHOT_KINDS


def straight_target(pools: Sequence[Mapping[str, Any]]) -> int | None:
    """The pool whose desktop the user goes straight to after log-in; ``None``: the pool tiles.

    A user who holds exactly one desktop goes to it; one who holds none and may use
    exactly one pool goes to that pool's desktop. Only where that pool (or the global
    setting) says so (``straight_to_desktop``), and never to a pool in maintenance,
    whose tile says why no desktop comes.
    """
    held = [pool for pool in pools if pool["desktop"] is not None]
    if len(held) == 1:
        candidate = held[0]
    elif not held and len(pools) == 1:
        candidate = pools[0]
    else:
        return None
    if not candidate["straight_to_desktop"] or candidate["maintenance"]:
        return None
    return int(candidate["id"])


@dataclass(frozen=True)
class _HeldDesktop(Record):
    """A user's desktop in a pool."""

    id: int
    name: str
    state: str
    kind: str
    volatile: bool
    pool_id: int


class PoolCatalog:
    def __init__(self, db: Database, hub: LiveHub) -> None:
        self.db = db
        self.hub = hub
        # Directory groups of users seen logged in, so pool events reach group members too.
        self._user_groups: dict[int, frozenset[str]] = {}

    def remember_groups(self, user_id: int, groups: tuple[str, ...]) -> None:
        self._user_groups[user_id] = frozenset(g.lower() for g in groups)

    async def pools_for(self, user_id: int, groups: tuple[str, ...]) -> list[dict[str, Any]]:
        allowed = await pool_store.allowed_pool_ids(self.db, user_id, groups)
        if not allowed:
            return []
        rows = await fetch_records(
            self.db, PoolRecord, pools.select().where(pools.c.id.in_(allowed)).order_by(pools.c.name)
        )
        counts = await pool_store.pool_counts(self.db, allowed)
        everywhere = await get_flag(self.db, STRAIGHT_TO_DESKTOP)
        held = {
            row.pool_id: row
            for row in await fetch_records(
                self.db,
                _HeldDesktop,
                sa.select(vms.c.id, vms.c.name, vms.c.state, vms.c.kind, vms.c.volatile, pool_vms.c.pool_id)
                .select_from(vms.join(pool_vms, pool_vms.c.vm_id == vms.c.id))
                .where(vms.c.assigned_user_id == user_id),
            )
        }
        answer = []
        for pool in rows:
            size, free = counts.get(pool.id, (0, 0))
            mine = held.get(pool.id)
            answer.append(
                {
                    "id": pool.id,
                    "name": pool.name,
                    "description": pool.description,
                    "size": size,
                    "free": free,
                    "maintenance": bool(pool.maintenance),
                    "failover": pool_store.failover_of(pool),
                    "straight_to_desktop": everywhere or bool(pool.straight_to_desktop),
                    "desktop": self._desktop(mine, pool) if mine else None,
                }
            )
        return answer

    @staticmethod
    def _desktop(vm: _HeldDesktop, pool: PoolRecord) -> dict[str, Any]:
        # Snapshots the user may keep of it: a persistent desktop in a pool that offers them.
        persistent = vm.kind in SNAPSHOT_KINDS and not vm.volatile
        return {
            "vm_id": vm.id,
            "name": vm.name,
            "state": vm.state,
            "snapshots": int(pool.user_snapshots) if persistent else 0,
        }

    async def _audience(self, pool_id: int) -> set[int]:
        members = await pool_store.pool_members(self.db, pool_id)
        audience = {user.id for user in members.users}
        names = {group.name.lower() for group in members.groups}
        audience |= {uid for uid, keys in self._user_groups.items() if keys & names}
        return audience

    async def publish_pool(self, pool_id: int) -> None:
        pool = await pool_store.get_pool(self.db, pool_id)
        if pool is None:
            return
        size, free = (await pool_store.pool_counts(self.db, [pool_id]))[pool_id]
        self.hub.publish(
            "pool",
            {
                "id": pool_id,
                "name": pool.name,
                "size": size,
                "free": free,
                "maintenance": bool(pool.maintenance),
            },
            admins=True,
            user_ids=await self._audience(pool_id),
        )

    def publish_lease(self, lease: LeaseRecord, state: str, **extra: Any) -> None:
        data = {"id": lease.id, "vm_id": lease.vm_id, "pool_id": lease.pool_id, "user_id": lease.user_id}
        self.hub.publish("lease", {**data, "state": state, **extra}, admins=True, user_ids={lease.user_id})
