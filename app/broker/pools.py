"""Pools: their settings, members (VMs, users, directory groups) and who may use them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from databases import Database

from app.clock import utcnow
from app.db.records import (
    DirectoryGroupRecord,
    PoolRecord,
    Record,
    UserRecord,
    fetch_record,
    fetch_records,
)
from app.db.retry import transaction
from app.db.schema import (
    directory_groups,
    hypervisors,
    leases,
    pool_groups,
    pool_users,
    pool_vms,
    pools,
    users,
    vms,
)
from app.i18n import gettext as _
from app.vms.devices.usb import MAX_REDIRECTIONS
from app.vms.records import Vm, get_vm

# Kinds of VM a pool can hand out: VDI clones and simple VMs (never golden images).
POOLABLE_KINDS = ("vdi", "simple")
FAILOVER_KINDS = ("none", "rdp", "horizon")


class PoolError(ValueError):
    """A bad pool request; ``field`` names the form field at fault."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class PoolMembership(Record):
    """A pool a VM or user belongs to (``pool_vms`` / ``pool_users``: its pool is all the domain reads)."""

    pool_id: int


@dataclass(frozen=True)
class PoolGroupGrant(Record):
    """A directory group that may use a pool."""

    pool_id: int
    group_name: str


@dataclass(frozen=True)
class PooledVm(Vm):
    """A pool's VM as the pool page lists it: with its hypervisor and who holds it."""

    hypervisor_name: str = ""
    assigned_to: str | None = None


@dataclass(frozen=True)
class PoolMembers:
    vms: list[PooledVm]
    users: list[UserRecord]
    groups: list[DirectoryGroupRecord]


@dataclass(frozen=True)
class PoolDesktop(Record):
    """A pooled VM with what decides whether it can be handed out, and its pool's name."""

    pool_id: int
    pool_name: str
    assigned_user_id: int | None
    state: str
    maintenance: bool
    locked: bool
    operation_id: int | None
    hv_state: str
    hv_maintenance: bool


@dataclass
class PoolSettings:
    name: str
    description: str = ""
    lease_timeout_min: int = 5
    reset_on_handout: bool = True
    keep_ready: int = 0
    max_per_user: int = 1
    maintenance: bool = False
    failover_kind: str = "none"
    failover_host: str = ""
    failover_domain: str = ""
    failover_pool: str = ""
    straight_to_desktop: bool = False
    # Device policy of the pool's desktops: all off unless allowed.
    clipboard: bool = False
    file_transfer: bool = False
    usb_redirect: int = 0
    # How many snapshots the user of a persistent (simple) desktop may keep of it; 0: none.
    user_snapshots: int = 0
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_form(cls, form: Mapping[str, Any]) -> PoolSettings:
        """Parse and check a submitted form; problems are collected per field in ``errors``."""
        errors: dict[str, str] = {}

        def text(key: str, limit: int = 255) -> str:
            value = str(form.get(key, "") or "").strip()
            if len(value) > limit:
                errors[key] = _("At most {limit} characters.").format(limit=limit)
            return value

        def number(key: str, default: int, low: int, high: int) -> int:
            raw = str(form.get(key, "") or "").strip()
            if raw == "":
                return default
            try:
                value = int(raw)
            except ValueError:
                errors[key] = _("Enter a whole number.")
                return default
            if not low <= value <= high:
                errors[key] = _("Enter a number from {low} to {high}.").format(low=low, high=high)
            return value

        def flag(key: str) -> bool:
            return str(form.get(key, "")).lower() in ("1", "on", "true", "yes")

        settings = cls(
            name=text("name", 64),
            description=text("description"),
            lease_timeout_min=number("lease_timeout_min", 5, 1, 7 * 24 * 60),
            reset_on_handout=flag("reset_on_handout"),
            keep_ready=number("keep_ready", 0, 0, 1000),
            max_per_user=number("max_per_user", 1, 1, 100),
            maintenance=flag("maintenance"),
            failover_kind=text("failover_kind", 16) or "none",
            failover_host=text("failover_host"),
            failover_domain=text("failover_domain"),
            failover_pool=text("failover_pool"),
            straight_to_desktop=flag("straight_to_desktop"),
            clipboard=flag("clipboard"),
            file_transfer=flag("file_transfer"),
            usb_redirect=number("usb_redirect", 0, 0, MAX_REDIRECTIONS),
            user_snapshots=number("user_snapshots", 0, 0, 50),
        )
        if not settings.name:
            errors["name"] = _("Give the pool a name.")
        if settings.failover_kind not in FAILOVER_KINDS:
            errors["failover_kind"] = _("Choose none, RDP or VMware Horizon.")
        elif settings.failover_kind != "none" and not settings.failover_host:
            errors["failover_host"] = _("Enter the RDP host or Horizon server users fall back to.")
        if settings.failover_kind == "horizon" and not settings.failover_pool:
            errors["failover_pool"] = _("Enter the Horizon pool name.")
        settings.errors = errors
        return settings

    def values(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "lease_timeout_min": self.lease_timeout_min,
            "reset_on_handout": self.reset_on_handout,
            "keep_ready": self.keep_ready,
            "max_per_user": self.max_per_user,
            "maintenance": self.maintenance,
            "failover_kind": self.failover_kind,
            "failover_host": self.failover_host if self.failover_kind != "none" else "",
            "failover_domain": self.failover_domain if self.failover_kind == "rdp" else "",
            "failover_pool": self.failover_pool if self.failover_kind == "horizon" else "",
            "straight_to_desktop": self.straight_to_desktop,
            "clipboard": self.clipboard,
            "file_transfer": self.file_transfer,
            "usb_redirect": self.usb_redirect,
            "user_snapshots": self.user_snapshots,
        }

    def policy_differs(self, pool: PoolRecord) -> bool:
        """The device policy changed from the stored ``pool``'s."""
        return (pool.clipboard, pool.file_transfer, pool.usb_redirect) != (
            self.clipboard,
            self.file_transfer,
            self.usb_redirect,
        )


def failover_of(pool: PoolRecord) -> dict[str, str] | None:
    """The failover a client is offered when no desktop can be handed out, or ``None``."""
    if pool.failover_kind == "rdp":
        return {"protocol": "rdp", "host": pool.failover_host, "domain": pool.failover_domain}
    if pool.failover_kind == "horizon":
        return {"protocol": "horizon", "server": pool.failover_host, "pool": pool.failover_pool}
    return None


async def _name_taken(db: Database, name: str, except_id: int | None = None) -> bool:
    query = sa.select(pools.c.id).where(sa.func.lower(pools.c.name) == name.lower())
    if except_id is not None:
        query = query.where(pools.c.id != except_id)
    return await db.fetch_one(query) is not None


async def create_pool(db: Database, settings: PoolSettings) -> int:
    if settings.errors:
        raise PoolError(next(iter(settings.errors.values())), next(iter(settings.errors)))
    if await _name_taken(db, settings.name):
        raise PoolError(_("A pool named {name!r} already exists.").format(name=settings.name), "name")
    pool_id: int = await db.execute(pools.insert().values(**settings.values(), created_at=utcnow()))
    return pool_id


async def update_pool(db: Database, pool_id: int, settings: PoolSettings) -> None:
    if settings.errors:
        raise PoolError(next(iter(settings.errors.values())), next(iter(settings.errors)))
    if await _name_taken(db, settings.name, except_id=pool_id):
        raise PoolError(_("A pool named {name!r} already exists.").format(name=settings.name), "name")
    await db.execute(pools.update().where(pools.c.id == pool_id).values(**settings.values()))


async def get_pool(db: Database, pool_id: int) -> PoolRecord | None:
    return await fetch_record(db, PoolRecord, pools.select().where(pools.c.id == pool_id))


async def list_pools(db: Database) -> list[PoolRecord]:
    return await fetch_records(db, PoolRecord, pools.select().order_by(pools.c.name))


async def active_leases_in_pool(db: Database, pool_id: int) -> int:
    query = (
        sa.select(sa.func.count())
        .select_from(leases)
        .where(leases.c.pool_id == pool_id, leases.c.ended_at.is_(None))
    )
    return int(await db.fetch_val(query) or 0)


async def delete_pool(db: Database, pool_id: int) -> None:
    """Delete the pool and its memberships; the VMs stay. Refused while desktops are in use."""
    if await active_leases_in_pool(db, pool_id):
        raise PoolError(_("Desktops of this pool are in use: end those sessions first."))
    async with transaction(db):
        for table in (pool_vms, pool_users, pool_groups):
            await db.execute(table.delete().where(table.c.pool_id == pool_id))
        await db.execute(leases.update().where(leases.c.pool_id == pool_id).values(pool_id=None))
        await db.execute(pools.delete().where(pools.c.id == pool_id))


# Members


async def add_vms(db: Database, pool_id: int, vm_ids: Iterable[int]) -> list[str]:
    """Add VMs; returns the names refused (already in a pool, or not a poolable kind)."""
    refused: list[str] = []
    for vm_id in vm_ids:
        vm = await get_vm(db, vm_id)
        if vm is None:
            continue
        taken = await fetch_record(db, PoolMembership, pool_vms.select().where(pool_vms.c.vm_id == vm_id))
        if vm.kind not in POOLABLE_KINDS or (taken is not None and taken.pool_id != pool_id):
            refused.append(vm.name)
            continue
        if taken is None:
            try:
                await db.execute(pool_vms.insert().values(pool_id=pool_id, vm_id=vm_id))
            except Exception:  # another request added it to a pool meanwhile (unique vm_id)
                refused.append(vm.name)
    return refused


async def pool_vm_ids(db: Database, pool_id: int) -> set[int]:
    rows = await db.fetch_all(sa.select(pool_vms.c.vm_id).where(pool_vms.c.pool_id == pool_id))
    return {row._mapping["vm_id"] for row in rows}


async def remove_vm(db: Database, pool_id: int, vm_id: int) -> None:
    vm = await get_vm(db, vm_id)
    if vm is not None and vm.assigned_user_id is not None:
        raise PoolError(_("{name} is in use: end its session first.").format(name=vm.name))
    await db.execute(pool_vms.delete().where(pool_vms.c.pool_id == pool_id, pool_vms.c.vm_id == vm_id))


async def set_users(db: Database, pool_id: int, user_ids: Iterable[int]) -> None:
    async with transaction(db):
        await db.execute(pool_users.delete().where(pool_users.c.pool_id == pool_id))
        for user_id in sorted(set(user_ids)):
            await db.execute(pool_users.insert().values(pool_id=pool_id, user_id=user_id))


async def set_groups(db: Database, pool_id: int, group_ids: Iterable[int]) -> None:
    async with transaction(db):
        await db.execute(pool_groups.delete().where(pool_groups.c.pool_id == pool_id))
        for group_id in sorted(set(group_ids)):
            await db.execute(pool_groups.insert().values(pool_id=pool_id, group_id=group_id))


async def pool_members(db: Database, pool_id: int) -> PoolMembers:
    return PoolMembers(
        vms=await fetch_records(
            db,
            PooledVm,
            sa.select(vms, hypervisors.c.name.label("hypervisor_name"), users.c.username.label("assigned_to"))
            .select_from(
                pool_vms.join(vms, vms.c.id == pool_vms.c.vm_id)
                .join(hypervisors, hypervisors.c.id == vms.c.hypervisor_id)
                .outerjoin(users, users.c.id == vms.c.assigned_user_id)
            )
            .where(pool_vms.c.pool_id == pool_id)
            .order_by(vms.c.name),
        ),
        users=await fetch_records(
            db,
            UserRecord,
            sa.select(users)
            .select_from(pool_users.join(users, users.c.id == pool_users.c.user_id))
            .where(pool_users.c.pool_id == pool_id)
            .order_by(users.c.username),
        ),
        groups=await fetch_records(
            db,
            DirectoryGroupRecord,
            sa.select(directory_groups)
            .select_from(pool_groups.join(directory_groups, directory_groups.c.id == pool_groups.c.group_id))
            .where(pool_groups.c.pool_id == pool_id)
            .order_by(directory_groups.c.name),
        ),
    )


async def unpooled_vms(db: Database) -> list[Vm]:
    """VMs that could join a pool: VDI and simple VMs in no pool yet."""
    in_pool = sa.select(pool_vms.c.vm_id)
    return await fetch_records(
        db,
        Vm,
        vms.select().where(vms.c.kind.in_(POOLABLE_KINDS), vms.c.id.not_in(in_pool)).order_by(vms.c.name),
    )


# Access


async def allowed_pool_ids(db: Database, user_id: int, group_keys: Iterable[str]) -> set[int]:
    """Pools the user may use: listed directly, or through a registered directory group."""
    direct = await fetch_records(
        db, PoolMembership, sa.select(pool_users.c.pool_id).where(pool_users.c.user_id == user_id)
    )
    ids = {row.pool_id for row in direct}
    keys = {k.lower() for k in group_keys}
    if keys:
        granted = await fetch_records(
            db,
            PoolGroupGrant,
            sa.select(pool_groups.c.pool_id, directory_groups.c.name.label("group_name")).select_from(
                pool_groups.join(directory_groups, directory_groups.c.id == pool_groups.c.group_id)
            ),
        )
        ids |= {row.pool_id for row in granted if row.group_name.lower() in keys}
    return ids


def _pool_desktops() -> sa.Select[Any]:
    """Each pooled VM with what decides whether it can be handed out, and its pool's name."""
    return sa.select(
        pool_vms.c.pool_id,
        pools.c.name.label("pool_name"),
        vms.c.assigned_user_id,
        vms.c.state,
        vms.c.maintenance,
        vms.c.locked,
        vms.c.operation_id,
        hypervisors.c.state.label("hv_state"),
        hypervisors.c.maintenance.label("hv_maintenance"),
    ).select_from(
        pool_vms.join(pools, pools.c.id == pool_vms.c.pool_id)
        .join(vms, vms.c.id == pool_vms.c.vm_id)
        .join(hypervisors, hypervisors.c.id == vms.c.hypervisor_id)
    )


def _is_free(row: PoolDesktop) -> bool:
    """Could be handed out now: unassigned, not held back, on a hypervisor that takes work."""
    return (
        row.assigned_user_id is None
        and not row.maintenance
        and not row.locked
        and row.operation_id is None
        and row.hv_state == "up"
        and not row.hv_maintenance
    )


def desktop_state(row: PoolDesktop) -> str:
    """free, in_use (assigned and running), booting (assigned, not running yet) or unavailable."""
    if row.assigned_user_id is not None:
        return "in_use" if row.state == "running" else "booting"
    return "free" if _is_free(row) else "unavailable"


async def pool_counts(db: Database, pool_ids: Iterable[int]) -> dict[int, tuple[int, int]]:
    """pool id -> (size, free): free counts desktops that could be handed out now."""
    wanted = list(pool_ids)
    if not wanted:
        return {}
    rows = await fetch_records(db, PoolDesktop, _pool_desktops().where(pool_vms.c.pool_id.in_(wanted)))
    counts = {pool_id: [0, 0] for pool_id in wanted}
    for row in rows:
        counts[row.pool_id][0] += 1
        if _is_free(row):
            counts[row.pool_id][1] += 1
    return {pool_id: (size, free) for pool_id, (size, free) in counts.items()}


async def desktop_states(db: Database) -> dict[str, dict[str, int]]:
    """pool name -> desktop state (see :func:`desktop_state`) -> count, for every pool."""
    states: dict[str, dict[str, int]] = {pool.name: {} for pool in await list_pools(db)}
    for row in await fetch_records(db, PoolDesktop, _pool_desktops()):
        counts = states.setdefault(row.pool_name, {})
        state = desktop_state(row)
        counts[state] = counts.get(state, 0) + 1
    return states
