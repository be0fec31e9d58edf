"""The pieces every VM workflow uses, bundled once by :class:`app.vms.service.VmService`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from databases import Database

from app.audit import AuditLog
from app.cluster.duties import Duties
from app.hyper import Hypervisor, HypervisorNotFound, HypervisorRegistry, HypervisorUnavailable
from app.i18n import gettext as _
from app.live.hub import LiveHub
from app.settings import VmSettings
from app.vms.errors import NotFound, Refused
from app.vms.operations import OperationsRunner
from app.vms.records import Vm, get_vm
from app.vms.waiting import StateWaiters


@dataclass
class VmContext:
    db: Database
    hub: LiveHub
    audit: AuditLog
    registry: HypervisorRegistry
    operations: OperationsRunner
    settings: VmSettings
    # Workflows wait here for domain states; the state sync resolves them.
    states: StateWaiters = field(default_factory=StateWaiters)
    # The background duties: VM state is recorded by their holder only (None: always here).
    duties: Duties | None = None
    # One lock per VM for the start / stop transitions of its volatile overlay.
    _overlay_locks: dict[int, asyncio.Lock] = field(default_factory=dict)

    def overlay_lock(self, vm_id: int) -> asyncio.Lock:
        lock = self._overlay_locks.get(vm_id)
        if lock is None:
            lock = self._overlay_locks[vm_id] = asyncio.Lock()
        return lock

    def recording(self) -> bool:
        """Whether this replica records VM state from libvirt events (it holds the duties)."""
        return self.duties is None or self.duties.held

    async def vm(self, vm_id: int) -> Vm:
        vm = await get_vm(self.db, vm_id)
        if vm is None:
            raise NotFound(f"there is no VM {vm_id}: it may have been deleted")
        return vm

    def hypervisor(self, hypervisor_id: int, *, new_work: bool = True) -> Hypervisor:
        """The connected hypervisor, or :class:`Refused` saying why it cannot work now.

        ``new_work`` (creating, starting, copying) is refused on a hypervisor in
        maintenance too; stopping, deleting and reading stay possible there, which is
        how an admin drains it.
        """
        try:
            return self.registry.get(hypervisor_id, for_new_work=new_work)
        except HypervisorNotFound:
            raise NotFound(f"there is no hypervisor {hypervisor_id}") from None
        except HypervisorUnavailable as exc:
            found = self.registry.find(hypervisor_id)
            if found is not None and found.state == "up" and found.connected and found.maintenance:
                raise Refused(
                    _("hypervisor {name} is in maintenance: take it out of maintenance first").format(
                        name=found.name
                    ),
                    code="hypervisor_maintenance",
                ) from None
            raise Refused(
                _("{exc}: wait until it is up again").format(exc=exc), code="hypervisor_unavailable"
            ) from None

    def publish_vm(self, vm: Vm, change: str = "updated") -> None:
        self.hub.publish("vm", {**vm.summary(), "change": change})

    def publish_removed(self, vm_id: int, name: str) -> None:
        self.hub.publish("vm", {"id": vm_id, "name": name, "change": "deleted"})

    async def refresh(self, vm_id: int, change: str = "updated") -> Vm | None:
        vm = await get_vm(self.db, vm_id)
        if vm is not None:
            self.publish_vm(vm, change)
        return vm
