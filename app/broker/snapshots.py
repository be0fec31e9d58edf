"""Snapshots of a user's own desktop, where its pool allows them (the portal and the broker API).

A user may list, take, revert and delete snapshots of a persistent desktop they
hold an active lease on, when the lease's pool keeps ``user_snapshots`` > 0 (at
most that many). The VM service does the work (:mod:`app.vms.snapshots`); here
the answer waits for the short operation, within a bound, so a client sees the
outcome (or ``running`` when it takes longer).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from databases import Database

from app.broker import pools as pool_store
from app.broker.leases import active_lease
from app.broker.power import DesktopPower
from app.i18n import gettext as _
from app.vms.errors import Invalid, VmError
from app.vms.service import VmService
from app.vms.snapshots import snapshot_json

# How long an answer waits for its snapshot operation before saying "running".
WAIT_SECONDS = 60.0


class SnapshotRefused(Exception):
    def __init__(self, status: int, code: str, message: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields

    @classmethod
    def of(cls, exc: VmError) -> SnapshotRefused:
        """The VM service's refusal as the broker API says it (bad input names its fields)."""
        return cls(exc.status, exc.code, exc.message, exc.errors if isinstance(exc, Invalid) else None)


@dataclass(frozen=True)
class Outcome:
    """``state``: succeeded, failed or running (still at it when the answer was due)."""

    state: str
    message: str
    snapshots: list[dict[str, Any]]


class DesktopSnapshots:
    def __init__(self, db: Database, power: DesktopPower) -> None:
        self.db = db
        self.power = power

    def _vms(self) -> VmService:
        return self.power.vms

    async def limit(self, vm_id: int, user_id: int) -> int:
        """How many snapshots the user may keep of this desktop; refused if none or not theirs."""
        lease = await active_lease(self.db, vm_id, user_id)
        if lease is None:
            raise SnapshotRefused(403, "not_your_desktop", _("This desktop is not assigned to you."))
        pool = await pool_store.get_pool(self.db, lease.pool_id) if lease.pool_id else None
        allowed = int(pool.user_snapshots) if pool is not None else 0
        if allowed <= 0:
            raise SnapshotRefused(
                403, "snapshots_not_allowed", _("Your desktop's pool does not offer snapshots.")
            )
        return allowed

    async def of(self, vm_id: int, user_id: int) -> tuple[int, list[dict[str, Any]]]:
        """(the limit, the snapshots) of the user's desktop."""
        allowed = await self.limit(vm_id, user_id)
        try:
            found = await self._vms().snapshots.of(vm_id)
        except VmError as exc:
            raise SnapshotRefused.of(exc) from exc
        return allowed, [snapshot_json(snapshot) for snapshot in found]

    async def take(
        self, vm_id: int, user_id: int, *, name: str | None, description: str, actor: str, client_address: str
    ) -> Outcome:
        allowed = await self.limit(vm_id, user_id)
        return await self._wait(
            vm_id,
            self._vms().snapshots.take(
                vm_id, name, description, limit=allowed, actor=actor, client_address=client_address
            ),
        )

    async def revert(
        self, vm_id: int, user_id: int, name: str, *, actor: str, client_address: str
    ) -> Outcome:
        await self.limit(vm_id, user_id)
        return await self._wait(
            vm_id, self._vms().snapshots.revert(vm_id, name, actor=actor, client_address=client_address)
        )

    async def delete(
        self, vm_id: int, user_id: int, name: str, *, actor: str, client_address: str
    ) -> Outcome:
        await self.limit(vm_id, user_id)
        return await self._wait(
            vm_id, self._vms().snapshots.delete(vm_id, name, actor=actor, client_address=client_address)
        )

    async def _wait(self, vm_id: int, started: Any) -> Outcome:
        service = self._vms()
        try:
            op_id = await started
        except VmError as exc:
            raise SnapshotRefused.of(exc) from exc
        try:
            operation = await asyncio.wait_for(service.operations.wait(op_id), WAIT_SECONDS)
        except TimeoutError:
            return Outcome("running", _("Still at it: look again in a moment."), [])
        found = [snapshot_json(snapshot) for snapshot in await service.snapshots.of(vm_id)]
        if operation.state != "succeeded":
            return Outcome("failed", operation.error or operation.message, found)
        return Outcome("succeeded", operation.message, found)
