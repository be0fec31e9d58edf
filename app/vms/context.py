"""The pieces every VM workflow uses, bundled once by :class:`app.vms.service.VmService`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from databases import Database

from app.audit import AuditLog
from app.live.hub import LiveHub
from app.settings import VmSettings
from app.vms.contract import RegistryAccess
from app.vms.errors import NotFound, Refused
from app.vms.operations import OperationsRunner
from app.vms.records import HypervisorRecord, Vm, get_hypervisor, get_vm


class StateWaiter(Protocol):
    async def wait_for(
        self,
        hypervisor_id: int,
        name: str,
        states: Iterable[str],
        *,
        within: float,
        hv: Any = None,
        recheck: float = 2.0,
    ) -> str | None: ...


@dataclass
class VmContext:
    db: Database
    hub: LiveHub
    audit: AuditLog
    registry: RegistryAccess
    operations: OperationsRunner
    settings: VmSettings
    # Set by the service once the state sync exists (it needs this context first).
    states: StateWaiter | None = None
    # One lock per VM for the start / stop transitions of its volatile overlay.
    _overlay_locks: dict[int, asyncio.Lock] = field(default_factory=dict)

    def overlay_lock(self, vm_id: int) -> asyncio.Lock:
        lock = self._overlay_locks.get(vm_id)
        if lock is None:
            lock = self._overlay_locks[vm_id] = asyncio.Lock()
        return lock

    def waiter(self) -> StateWaiter:
        if self.states is None:
            raise RuntimeError("the VM state sync is not running")
        return self.states

    async def vm(self, vm_id: int) -> Vm:
        vm = await get_vm(self.db, vm_id)
        if vm is None:
            raise NotFound(f"there is no VM {vm_id}: it may have been deleted")
        return vm

    async def hypervisor_record(self, hypervisor_id: int) -> HypervisorRecord:
        record = await get_hypervisor(self.db, hypervisor_id)
        if record is None:
            raise NotFound(f"there is no hypervisor {hypervisor_id}")
        return record

    async def usable_hypervisor(
        self, hypervisor_id: int, *, allow_maintenance: bool = False
    ) -> tuple[HypervisorRecord, Any]:
        """The hypervisor's record and live handle, or :class:`Refused` saying why it cannot work now."""
        record = await self.hypervisor_record(hypervisor_id)
        if record.maintenance and not allow_maintenance:
            raise Refused(
                f"hypervisor {record.name} is in maintenance: take it out of maintenance first",
                code="hypervisor_maintenance",
            )
        try:
            hv = self.registry.get(hypervisor_id)
        except Exception as exc:
            reason = str(exc) or record.state_reason or "not connected"
            raise Refused(
                f"hypervisor {record.name} is unavailable ({reason}): wait until it is up again",
                code="hypervisor_unavailable",
            ) from exc
        state = getattr(hv, "state", "up")
        if state != "up":
            reason = getattr(hv, "reason", "") or record.state_reason
            detail = f" ({reason})" if reason else ""
            raise Refused(
                f"hypervisor {record.name} is {state}{detail}: wait until it is up again",
                code="hypervisor_unavailable",
            )
        return record, hv

    def publish_vm(self, vm: Vm, change: str = "updated") -> None:
        self.hub.publish("vm", {**vm.summary(), "change": change})

    def publish_removed(self, vm_id: int, name: str) -> None:
        self.hub.publish("vm", {"id": vm_id, "name": name, "change": "deleted"})

    async def refresh(self, vm_id: int, change: str = "updated") -> Vm | None:
        vm = await get_vm(self.db, vm_id)
        if vm is not None:
            self.publish_vm(vm, change)
        return vm
