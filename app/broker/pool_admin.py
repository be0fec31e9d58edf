"""What an administrator does to a pool, for the pool pages and the admin API alike.

Each change is stored, then the portal's live pool list learns of it, and the pool's
device policy reaches its desktops (running ones at their next start). The caller audits
the change under its own name; the rules of each change are :mod:`app.broker.pools`'.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa
from databases import Database

from app.broker import pools as store
from app.db.records import PoolRecord
from app.db.schema import directory_groups, users

if TYPE_CHECKING:
    from app.broker.catalog import PoolCatalog
    from app.services import Services
    from app.vms.service import VmService


@dataclass(frozen=True)
class VmsAdded:
    # Ids of the VMs now in the pool among those asked for.
    added: list[int]
    # Names of those refused: in another pool already, or not a VDI or simple VM.
    refused: list[str]


class PoolAdmin:
    def __init__(self, db: Database, catalog: PoolCatalog, vms: VmService) -> None:
        self.db = db
        self.catalog = catalog
        self.vms = vms

    @classmethod
    def of(cls, services: Services) -> PoolAdmin:
        return cls(services.db, services.broker.catalog, services.vms)

    async def create(self, settings: store.PoolSettings) -> int:
        """The new pool's id; :class:`~app.broker.pools.PoolError` names the field at fault."""
        return await store.create_pool(self.db, settings)

    async def update(self, pool: PoolRecord, settings: store.PoolSettings) -> list[str]:
        """Store the settings; the names of the running desktops a changed device policy reaches
        only at their next start."""
        await store.update_pool(self.db, pool.id, settings)
        await self.catalog.publish_pool(pool.id)
        if settings.policy_differs(pool):
            return await self.vms.apply_pool_policy(pool.id)
        return []

    async def add_vms(self, pool: PoolRecord, vm_ids: Iterable[int]) -> VmsAdded:
        """Add desktops; each one added gets the pool's device policy."""
        wanted = list(vm_ids)
        refused = await store.add_vms(self.db, pool.id, wanted)
        members = await store.pool_vm_ids(self.db, pool.id)
        added = [vm_id for vm_id in wanted if vm_id in members]
        await self.vms.apply_pool_policy(pool.id, added)
        await self.catalog.publish_pool(pool.id)
        return VmsAdded(added=added, refused=refused)

    async def remove_vm(self, pool: PoolRecord, vm_id: int) -> None:
        """Refused (:class:`~app.broker.pools.PoolError`) while someone holds the desktop."""
        await store.remove_vm(self.db, pool.id, vm_id)
        await self.catalog.publish_pool(pool.id)

    async def set_members(
        self, pool: PoolRecord, *, user_ids: Iterable[int] | None, group_ids: Iterable[int] | None
    ) -> None:
        """Who may use the pool: its portal users and directory groups (``None``: left as they are).

        Ids of no portal user or registered group are left out, as the form offers only those."""
        if user_ids is not None:
            wanted = set(user_ids)
            known = await self.db.fetch_all(
                sa.select(users.c.id).where(users.c.id.in_(wanted), users.c.role == "client")
            )
            await store.set_users(self.db, pool.id, [row._mapping["id"] for row in known])
        if group_ids is not None:
            wanted = set(group_ids)
            known = await self.db.fetch_all(
                sa.select(directory_groups.c.id).where(directory_groups.c.id.in_(wanted))
            )
            await store.set_groups(self.db, pool.id, [row._mapping["id"] for row in known])
        await self.catalog.publish_pool(pool.id)

    async def delete(self, pool: PoolRecord) -> None:
        """The pool and its memberships go, its VMs stay; refused while its desktops are in use."""
        await store.delete_pool(self.db, pool.id)
