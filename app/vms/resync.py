"""After a database outage: redo what the lifecycle events lost meanwhile would have done.

Events that arrived while the database was away could not be stored, and their
follow-ups (a VM's new state, its consoles revoked when it stopped, its per-boot
overlay removed) did not happen. libvirt does not replay them, so the hypervisors'
domain lists are the truth: every connected hypervisor is reconciled (states,
vanished domains, stale overlays, interrupted operations), the VMs of the others
are marked unknown, and every console of a VM that is now stopped is revoked.
"""

from __future__ import annotations

import logging
from typing import Protocol

import sqlalchemy as sa
from databases import Database

from app.db.schema import console_epochs, console_tickets
from app.proxy.sessions import VM_STOPPED
from app.vms.records import list_vms
from app.vms.sync import STOPPED_STATES, StateSync

log = logging.getLogger("kvmvdi.vms.resync")

NOT_RUNNING = STOPPED_STATES | {"missing"}


class ConsoleRevoker(Protocol):
    async def revoke_for_vm(self, vm_id: int, reason: str) -> int: ...


class Resync:
    def __init__(self, *, db: Database, sync: StateSync, consoles: ConsoleRevoker) -> None:
        self.db = db
        self.sync = sync
        self.consoles = consoles
        self.runs = 0

    async def __call__(self) -> None:
        if not self.sync.ctx.recording():
            # Another replica records VM state (and did through this replica's outage).
            return
        registry = self.sync.ctx.registry
        for hv in registry.all():
            if hv.state == "up" and hv.connected:
                report = await self.sync.reconcile(hv.id)
                changed = {kind: names for kind, names in report.items() if names}
                if changed:
                    log.info("after the outage, hypervisor %s: %s", hv.name, changed)
            else:
                await self.sync.mark_unknown(hv.id)
        for vm_id in await self._stopped_with_consoles():
            await self.consoles.revoke_for_vm(vm_id, VM_STOPPED.code)
        self.runs += 1

    async def _stopped_with_consoles(self) -> list[int]:
        """Stopped VMs that still have a console ticket not revoked, or a SPICE password epoch."""
        stopped = {vm.id for vm in await list_vms(self.db) if vm.state in NOT_RUNNING}
        if not stopped:
            return []
        tickets = sa.select(console_tickets.c.vm_id).where(console_tickets.c.revoked_at.is_(None))
        rows = await self.db.fetch_all(sa.union(tickets, sa.select(console_epochs.c.vm_id)))
        return sorted(stopped & {int(row[0]) for row in rows})
