"""Atomic desktop allocation: under any concurrency a VM goes to one user at most.

One write transaction per request (see :mod:`app.broker.transactions`):

1. write the requesting user's row (a request counter), so two requests of one user
   (two tabs, an API client and the portal, two replicas) cannot both take a desktop past
   ``max_per_user``: on one server the row lock serializes them, on Galera the second to
   certify fails and runs again (:meth:`WriteTransactions.run`);
2. a user who still holds a lease in the pool gets that desktop back (lease renewed);
3. otherwise the eligible candidates are read (free, not in maintenance, not
   locked, no operation running, in a known state, on an "up" hypervisor that is not in
   maintenance, and accepting work in the hypervisor registry right now), and
   the first that can be locked, one primary-key lookup at a time, with
   ``FOR UPDATE SKIP LOCKED`` on
   MariaDB (concurrent requests skip each other's rows instead of queueing) or
   simply chosen on SQLite (writers are serialized);
4. the VM row is assigned and a lease row inserted, then the transaction commits. Two
   requests that picked the same desktop through two Galera nodes both wrote its row: one
   of them fails certification and runs again.

Nothing here talks to a hypervisor: starting or resetting the VM happens after
the commit, in :mod:`app.broker.desktops`.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import sqlalchemy as sa
from databases.core import Connection

from app.broker.transactions import WriteTransactions
from app.clock import Clock
from app.db.records import Identified, LeaseRecord, PoolRecord, Record, fetch_record, fetch_records
from app.db.schema import hypervisors, leases, pool_vms, users, vms

Refusal = Literal["no_free_desktop", "maintenance", "not_allowed", "all_hypervisors_down", "desktop_limit"]


@dataclass(frozen=True)
class Claim:
    """The outcome of one desktop request."""

    refusal: Refusal | None = None
    vm_id: int | None = None
    lease_id: int | None = None
    expires_at: datetime | None = None
    # True when the desktop was already this user's (a renewed lease).
    renewed: bool = False
    # The user the VM served before, when it changed hands (the caller decides about a reset).
    previous_user_id: int | None = None

    @property
    def ok(self) -> bool:
        return self.refusal is None


# ``on_assigned(vm_id, lease_id)``: written inside the transaction that hands a desktop out.
Assigned = Callable[[int, int], Awaitable[None]]

# Nobody knows what a desktop in these states runs (its hypervisor or the database was away,
# or its domain vanished): it is not handed out until a resync has seen it.
UNKNOWN_STATES = ("unknown", "missing")


@dataclass(frozen=True)
class _FreeVm(Record):
    id: int
    last_user_id: int | None


@dataclass(frozen=True)
class _AssignedVm(Record):
    id: int
    assigned_user_id: int


@dataclass(frozen=True)
class _HostState(Record):
    id: int
    state: str
    maintenance: bool


def _eligible() -> list[sa.ColumnElement[bool]]:
    return [
        vms.c.assigned_user_id.is_(None),
        vms.c.maintenance.is_(sa.false()),
        vms.c.locked.is_(sa.false()),
        vms.c.operation_id.is_(None),
        vms.c.state.notin_(UNKNOWN_STATES),
    ]


def _on(hypervisor_ids: Collection[int] | None) -> list[sa.ColumnElement[bool]]:
    return [] if hypervisor_ids is None else [vms.c.hypervisor_id.in_(list(hypervisor_ids))]


class Allocator:
    def __init__(self, transactions: WriteTransactions, *, clock: Clock) -> None:
        self.transactions = transactions
        # When leases start, expire and are renewed: the dashboard's clock (tests move it).
        self.clock = clock

    async def claim(
        self,
        pool: PoolRecord,
        user_id: int,
        *,
        client_address: str = "",
        another: bool = False,
        now: datetime | None = None,
        hypervisor_ids: Collection[int] | None = None,
        on_assigned: Assigned | None = None,
    ) -> Claim:
        """Give ``user_id`` a desktop of ``pool`` (the one they hold, or a free one).

        ``hypervisor_ids``: the hypervisors a new desktop may come from (those the
        registry sees connected and accepting work); ``None`` trusts the stored state.
        ``on_assigned(vm_id, lease_id)`` runs inside the transaction that creates a new lease (its
        audit record): both are stored, or neither.
        """
        if pool.maintenance:
            return Claim(refusal="maintenance")
        now = now or self.clock.now()
        expires_at = now + timedelta(minutes=pool.lease_timeout_min)
        attempts = 0

        async def claim(conn: Connection) -> Claim:
            nonlocal attempts
            attempts += 1
            # Written, not only locked: on Galera only written rows conflict across nodes, so two
            # requests of one user through two replicas cannot both pass max_per_user.
            await conn.execute(
                users.update()
                .where(users.c.id == user_id)
                .values(desktop_requests=users.c.desktop_requests + 1)
            )
            held = await fetch_records(
                conn,
                LeaseRecord,
                sa.select(leases)
                .where(leases.c.pool_id == pool.id, leases.c.user_id == user_id, leases.c.ended_at.is_(None))
                .order_by(leases.c.started_at.desc(), leases.c.id.desc()),
            )
            if held and not another:
                lease = held[0]
                await conn.execute(
                    leases.update()
                    .where(leases.c.id == lease.id)
                    .values(expires_at=expires_at, last_heartbeat_at=now, client_address=client_address)
                )
                return Claim(vm_id=lease.vm_id, lease_id=lease.id, expires_at=expires_at, renewed=True)
            if len(held) >= pool.max_per_user:
                return Claim(refusal="desktop_limit")
            # After losing a conflict, start elsewhere in the list: the winner's peers on other
            # nodes are probably trying the first desktops too.
            vm = await self._lock_free_vm(conn, pool.id, user_id, hypervisor_ids, spread=attempts > 1)
            if vm is None:
                return Claim(refusal=await self._why_none(conn, pool.id, hypervisor_ids))
            await conn.execute(
                vms.update()
                .where(vms.c.id == vm.id, vms.c.assigned_user_id.is_(None))
                .values(assigned_user_id=user_id)
            )
            lease_id = await conn.execute(
                leases.insert().values(
                    user_id=user_id,
                    vm_id=vm.id,
                    pool_id=pool.id,
                    client_address=client_address,
                    started_at=now,
                    last_heartbeat_at=now,
                    expires_at=expires_at,
                )
            )
            if on_assigned is not None:
                await on_assigned(vm.id, lease_id)
            return Claim(
                vm_id=vm.id, lease_id=lease_id, expires_at=expires_at, previous_user_id=vm.last_user_id
            )

        return await self.transactions.run(claim, what="desktop allocation")

    async def _lock_free_vm(
        self,
        conn: Connection,
        pool_id: int,
        user_id: int,
        hypervisor_ids: Collection[int] | None,
        *,
        spread: bool = False,
    ) -> _FreeVm | None:
        # Hypervisor conditions come from a plain read: locking rows of a join would lock
        # the hypervisor row too and serialize every request of the pool on it.
        # Prefer a running desktop (no boot wait), then the user's previous one (no reset needed).
        candidates = await fetch_records(
            conn,
            Identified,
            sa.select(vms.c.id)
            .select_from(
                pool_vms.join(vms, vms.c.id == pool_vms.c.vm_id).join(
                    hypervisors, hypervisors.c.id == vms.c.hypervisor_id
                )
            )
            .where(
                pool_vms.c.pool_id == pool_id,
                hypervisors.c.state == "up",
                hypervisors.c.maintenance.is_(sa.false()),
                *_eligible(),
                *_on(hypervisor_ids),
            )
            .order_by(
                sa.case((vms.c.state == "running", 0), else_=1),
                sa.case((vms.c.last_user_id == user_id, 0), else_=1),
                vms.c.id,
            ),
        )
        if spread and candidates:
            start = random.randrange(len(candidates))  # noqa: S311 - not a secret
            candidates = [*candidates[start:], *candidates[:start]]
        # One primary-key lookup per candidate: a locking read with ORDER BY ... LIMIT would
        # lock every row it sorted, and concurrent requests would skip desktops nobody takes.
        for candidate in candidates:
            vm = await fetch_record(
                conn,
                _FreeVm,
                sa.select(vms.c.id, vms.c.last_user_id)
                .where(vms.c.id == candidate.id, *_eligible())
                .with_for_update(skip_locked=True),
            )
            if vm is not None:
                return vm
        return None

    async def _why_none(
        self, conn: Connection, pool_id: int, hypervisor_ids: Collection[int] | None
    ) -> Refusal:
        rows = await fetch_records(
            conn,
            _HostState,
            sa.select(hypervisors.c.id, hypervisors.c.state, hypervisors.c.maintenance)
            .select_from(
                pool_vms.join(vms, vms.c.id == pool_vms.c.vm_id).join(
                    hypervisors, hypervisors.c.id == vms.c.hypervisor_id
                )
            )
            .where(pool_vms.c.pool_id == pool_id),
        )
        accepting = set(hypervisor_ids) if hypervisor_ids is not None else None
        if rows and all(
            row.state != "up" or row.maintenance or (accepting is not None and row.id not in accepting)
            for row in rows
        ):
            return "all_hypervisors_down"
        return "no_free_desktop"

    async def end_lease(
        self,
        lease_id: int,
        *,
        reason: str,
        only_if_expired: bool = False,
        on_ended: Callable[[LeaseRecord], Awaitable[None]] | None = None,
    ) -> LeaseRecord | None:
        """End a lease; returns it, or ``None`` if it had already ended. ``on_ended(lease)`` runs inside
        the ending transaction (its audit record): both are stored, or neither.

        The VM stays assigned until :meth:`free_vm` (after a reset, if any), so no
        other request can take a desktop that is still being power-cycled. With
        ``only_if_expired`` a lease that a heartbeat renewed meanwhile is left
        alone (the reaper's check and act happen under the row lock).
        """
        now = self.clock.now()

        async def end(conn: Connection) -> LeaseRecord | None:
            query = sa.select(leases).where(leases.c.id == lease_id, leases.c.ended_at.is_(None))
            if only_if_expired:
                query = query.where(leases.c.expires_at <= now)
            lease = await fetch_record(conn, LeaseRecord, query.with_for_update())
            if lease is None:
                return None
            await conn.execute(
                leases.update().where(leases.c.id == lease_id).values(ended_at=now, end_reason=reason)
            )
            if on_ended is not None:
                await on_ended(lease)
            return lease

        return await self.transactions.run(end, what="ending a lease")

    async def free_vm(self, vm_id: int, user_id: int, *, clean: bool) -> None:
        """Return the VM to the pool; ``clean`` (it was reset) forgets the previous user."""

        async def free(conn: Connection) -> None:
            still_held = await fetch_record(
                conn,
                Identified,
                sa.select(leases.c.id).where(leases.c.vm_id == vm_id, leases.c.ended_at.is_(None)),
            )
            if still_held is not None:
                return
            await conn.execute(
                vms.update()
                .where(vms.c.id == vm_id, vms.c.assigned_user_id == user_id)
                .values(assigned_user_id=None, last_user_id=None if clean else user_id)
            )

        await self.transactions.run(free, what="returning a desktop")

    async def free_orphans(
        self, *, besides: Collection[int] = (), grace: timedelta | None = None
    ) -> list[int]:
        """Free VMs assigned without an active lease (a return interrupted by a restart or a database
        outage), but those in ``besides`` (returns in progress here).

        With ``grace``, only VMs whose last lease ended longer ago than that (another replica
        may be resetting a desktop it is returning right now).
        """

        async def free(conn: Connection) -> list[int]:
            held = sa.select(leases.c.vm_id).where(leases.c.ended_at.is_(None))
            orphaned = [
                vms.c.assigned_user_id.is_not(None),
                vms.c.id.not_in(held),
                vms.c.id.not_in(list(besides)),
            ]
            if grace is not None:
                recent = sa.select(leases.c.vm_id).where(leases.c.ended_at > self.clock.now() - grace)
                orphaned.append(vms.c.id.not_in(recent))
            rows = await fetch_records(
                conn,
                _AssignedVm,
                sa.select(vms.c.id, vms.c.assigned_user_id).where(*orphaned).with_for_update(),
            )
            for row in rows:
                await conn.execute(
                    vms.update()
                    .where(vms.c.id == row.id)
                    .values(assigned_user_id=None, last_user_id=row.assigned_user_id)
                )
            return [row.id for row in rows]

        return await self.transactions.run(free, what="freeing orphaned desktops")

    async def heartbeat(self, lease_id: int, user_id: int, timeout_min: int) -> tuple[str, datetime | None]:
        """Extend a lease: ("ok", new expiry), ("not_found", None) or ("ended", None)."""
        now = self.clock.now()

        async def extend(conn: Connection) -> tuple[str, datetime | None]:
            lease = await fetch_record(
                conn,
                LeaseRecord,
                sa.select(leases)
                .where(leases.c.id == lease_id, leases.c.user_id == user_id)
                .with_for_update(),
            )
            if lease is None:
                return "not_found", None
            if lease.ended_at is not None:
                return "ended", None
            expires_at = max(lease.expires_at, now + timedelta(minutes=timeout_min))
            await conn.execute(
                leases.update()
                .where(leases.c.id == lease_id)
                .values(last_heartbeat_at=now, expires_at=expires_at)
            )
            return "ok", expires_at

        return await self.transactions.run(extend, what="lease heartbeat")
