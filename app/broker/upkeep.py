"""Leases after the hand-out: heartbeats, console sessions that count as heartbeats, expiry,
and the return of a desktop to its pool (consoles revoked, desktop reset, then freed)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from databases import Database

from app.audit import AuditLog
from app.broker import pools as pool_store
from app.broker.allocation import Allocator
from app.broker.catalog import PoolCatalog
from app.broker.leases import active_lease, expired_leases, get_lease, heartbeat_interval
from app.broker.power import DesktopPower, DesktopPowerError
from app.db.records import LeaseRecord, UserRecord, fetch_record, fetch_records
from app.db.schema import leases, pools, users
from app.proxy.service import ConsoleService
from app.vms.records import Vm, get_vm

log = logging.getLogger("kvmvdi.broker")

# Desktops reset at once by the reaper when many leases end together.
RESET_CONCURRENCY = 8


@dataclass(frozen=True)
class _HeldLease(LeaseRecord):
    """A lease with its pool's timeout (none once the pool is deleted)."""

    lease_timeout_min: int | None = None


class LeaseUpkeep:
    def __init__(
        self,
        *,
        db: Database,
        audit: AuditLog,
        allocator: Allocator,
        consoles: ConsoleService,
        power: DesktopPower,
        catalog: PoolCatalog,
    ) -> None:
        self.db = db
        self.audit = audit
        self.allocator = allocator
        self.consoles = consoles
        self.power = power
        self.catalog = catalog
        # Desktops whose lease ended and whose return (reset, then freed) is under way.
        self.returning: set[int] = set()

    async def open_console_holders(self) -> set[tuple[int, int]]:
        """(user id, VM id) of every console session open through the proxy right now, on any replica."""
        return {(console.user_id, console.vm_id) for console in await self.consoles.open_consoles()}

    async def heartbeat(self, lease_id: int, user_id: int) -> tuple[str, datetime | None]:
        lease = await get_lease(self.db, lease_id)
        if lease is None or lease.user_id != user_id:
            return "not_found", None
        pool = await pool_store.get_pool(self.db, lease.pool_id) if lease.pool_id else None
        timeout = pool.lease_timeout_min if pool is not None else 5
        return await self.allocator.heartbeat(lease_id, user_id, timeout)

    async def heartbeat_vm(self, vm_id: int, user_id: int) -> tuple[str, datetime | None]:
        """Heartbeat by desktop (the console page knows its VM, not its lease)."""
        lease = await active_lease(self.db, vm_id, user_id)
        if lease is None:
            return "not_found", None
        return await self.heartbeat(lease.id, user_id)

    async def keep_console_leases(self) -> int:
        """An open console session counts as a heartbeat of its user's lease on that desktop.

        A user working in remote-viewer (through the CONNECT gateway) has no portal tab
        sending heartbeats; as long as their console session is open the lease is
        extended, at the pace a client's heartbeats would. Returns how many were.
        """
        holders = await self.open_console_holders()
        if not holders:
            return 0
        rows = await fetch_records(
            self.db,
            _HeldLease,
            sa.select(leases, pools.c.lease_timeout_min)
            .select_from(leases.outerjoin(pools, pools.c.id == leases.c.pool_id))
            .where(leases.c.ended_at.is_(None), leases.c.vm_id.in_(sorted({vm for _, vm in holders}))),
        )
        now = self.allocator.clock.now()
        extended = 0
        for row in rows:
            if (row.user_id, row.vm_id) not in holders:
                continue
            timeout = row.lease_timeout_min or 5
            if now - row.last_heartbeat_at < timedelta(seconds=heartbeat_interval(timeout)):
                continue
            state, _expires = await self.allocator.heartbeat(row.id, row.user_id, timeout)
            extended += state == "ok"
        return extended

    async def release(
        self,
        lease_id: int,
        *,
        user_id: int | None,
        actor: str,
        client_address: str = "",
        reason: str = "released",
    ) -> bool:
        lease = await get_lease(self.db, lease_id)
        if lease is None or (user_id is not None and lease.user_id != user_id):
            return False
        await self.return_desktop(lease_id, reason=reason, actor=actor, client_address=client_address)
        return True

    async def reap_expired(self) -> None:
        """End expired leases (after counting open consoles as heartbeats) and return their desktops."""
        await self.keep_console_leases()
        # A console opened since (or a lease that expired since) the step above: still held.
        holders = await self.open_console_holders()
        expired = [
            row.id
            for row in await expired_leases(self.db, self.allocator.clock.now())
            if (row.user_id, row.vm_id) not in holders
        ]
        if not expired:
            return
        limit = asyncio.Semaphore(RESET_CONCURRENCY)

        async def one(lease_id: int) -> None:
            async with limit:
                await self.return_desktop(lease_id, reason="expired", actor="broker", only_if_expired=True)

        results = await asyncio.gather(*(one(lease_id) for lease_id in expired), return_exceptions=True)
        for lease_id, result in zip(expired, results, strict=True):
            if isinstance(result, Exception):
                log.error("returning the desktop of expired lease %s failed", lease_id, exc_info=result)

    async def return_desktop(
        self,
        lease_id: int,
        *,
        reason: str,
        actor: str,
        client_address: str = "",
        only_if_expired: bool = False,
        reset: bool | None = None,
    ) -> None:
        current = await get_lease(self.db, lease_id)
        if current is None or current.ended_at is not None:
            return
        vm = await get_vm(self.db, current.vm_id)
        pool = await pool_store.get_pool(self.db, current.pool_id) if current.pool_id else None
        if reset is None:
            reset = bool(pool is not None and vm is not None and (pool.reset_on_handout or vm.volatile))
        target = vm.name if vm is not None else str(current.vm_id)

        async def ended(lease: LeaseRecord) -> None:
            # In the lease's ending transaction: an ended lease always has its audit record.
            user = await fetch_record(self.db, UserRecord, users.select().where(users.c.id == lease.user_id))
            await self.audit.record(
                f"lease_{reason}" if reason in ("expired", "released", "ended_by_admin") else "lease_ended",
                actor=actor,
                target=target,
                client_address=client_address,
                user=user.username if user is not None else lease.user_id,
                lease_id=lease.id,
                reason=reason,
                reset=reset,
            )

        self.returning.add(current.vm_id)
        try:
            lease = await self.allocator.end_lease(
                lease_id, reason=reason, only_if_expired=only_if_expired, on_ended=ended
            )
            if lease is None:
                return
            await self._hand_back(lease, vm, reason=reason, reset=reset)
        finally:
            self.returning.discard(current.vm_id)
        if lease.pool_id is not None:
            await self.catalog.publish_pool(lease.pool_id)

    async def _hand_back(self, lease: LeaseRecord, vm: Vm | None, *, reason: str, reset: bool) -> None:
        """An ended lease's desktop back to its pool: consoles cut, reset (when asked), freed."""
        self.catalog.publish_lease(lease, "ended", reason=reason)
        # The next user must not inherit a console: cut them before the desktop is reset or handed on.
        try:
            cut = "ended_by_admin" if reason == "ended_by_admin" else "reassigned"
            await self.consoles.revoke_for_vm(lease.vm_id, cut)
        except Exception:
            log.exception("revoking the consoles of VM %s failed", lease.vm_id)
        clean = False
        if vm is not None:
            # Nobody uses it now: a desktop behind its image's target version moves to it (a fresh
            # boot there when it ran), which is a reset too.
            try:
                clean = await self.power.move_to_target(vm, actor="broker")
            except DesktopPowerError as exc:
                log.warning("moving %s to its image's target version failed: %s", vm.name, exc.message)
        if reset and vm is not None and not clean:
            try:
                await self.power.reset(vm, actor="broker")
                clean = True
            except DesktopPowerError as exc:
                # It keeps its previous user: the next hand-out to someone else resets it.
                log.warning("resetting %s failed: %s", vm.name, exc.message)
                await self.audit.record(
                    "desktop_reset_failed",
                    actor="broker",
                    target=vm.name,
                    lease_id=lease.id,
                    error=exc.message,
                )
        await self.allocator.free_vm(lease.vm_id, lease.user_id, clean=clean)
