"""``VmService``: the VM side of the dashboard, started and stopped by the lifespan.

It wires the state sync to the hypervisor registry's listeners, recovers
operations a previous run left behind, runs the thumbnail loop, and offers the
workflows to handlers (and to other parts such as the broker) as methods taking
plain parameters. Lifecycle events go through one queue, handled in order, so a
quick start/stop never ends up stored backwards.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from databases import Database

from app.audit import AuditLog
from app.live.hub import LiveHub
from app.settings import VmSettings
from app.vms import power as power_actions
from app.vms import workflows_create, workflows_disk, workflows_manage
from app.vms.context import VmContext
from app.vms.contract import RegistryAccess
from app.vms.definition import DefinitionError, NewBatch, NewInitial, NewVdi, NewVm, parse
from app.vms.disks import remove_files
from app.vms.errors import Invalid
from app.vms.operations import OperationsRunner
from app.vms.records import Vm, list_hypervisors
from app.vms.sync import StateSync
from app.vms.thumbnails import Thumbnails

log = logging.getLogger("kvmvdi.vms")


class VmService:
    def __init__(
        self,
        *,
        db: Database,
        hub: LiveHub,
        audit: AuditLog,
        registry: RegistryAccess,
        operations: OperationsRunner,
        settings: VmSettings,
    ) -> None:
        self.ctx = VmContext(
            db=db, hub=hub, audit=audit, registry=registry, operations=operations, settings=settings
        )
        self.sync = StateSync(self.ctx)
        self.ctx.states = self.sync
        self.thumbnails = Thumbnails(self.ctx)
        self.operations = operations
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._consumer: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self.operations.set_temp_remover(self._remove_temp)
        await self.operations.recover()
        self._consumer = asyncio.create_task(self._consume_events(), name="vm-events")
        registry: Any = self.ctx.registry
        registry.add_domain_listener(self._on_domain_event)
        add_connection_listener = getattr(registry, "add_connection_listener", None)
        if add_connection_listener is not None:
            add_connection_listener(self._on_connection)
        self.thumbnails.start()
        # Hypervisors that connected before these listeners existed are reconciled now.
        for record in await list_hypervisors(self.ctx.db):
            try:
                hv = registry.get(record.id)
            except Exception as exc:  # down or fenced: its connection event comes later
                log.debug("hypervisor %s not reconciled at start: %s", record.name, exc)
                continue
            if getattr(hv, "state", "up") == "up":
                self._events.put_nowait(("connection", (record.id, "up")))

    async def stop(self) -> None:
        await self.thumbnails.stop()
        await self.operations.stop()
        if self._consumer is not None:
            self._consumer.cancel()
            await asyncio.gather(self._consumer, return_exceptions=True)
        await self.sync.stop()

    def _on_domain_event(self, event: Any) -> None:
        self._events.put_nowait(("domain", event))

    def _on_connection(self, *args: Any) -> None:
        hypervisor_id, state = _connection_args(args)
        self._events.put_nowait(("connection", (hypervisor_id, state)))

    async def _consume_events(self) -> None:
        while True:
            kind, payload = await self._events.get()
            try:
                if kind == "domain":
                    await self.sync.on_domain_event(payload)
                else:
                    hypervisor_id, state = payload
                    # Reconciling lists every domain: off the event path so events keep flowing.
                    self.sync._spawn(self.sync.on_connection(hypervisor_id, state))
            except Exception:
                log.exception("handling a %s event failed", kind)
            finally:
                self._events.task_done()

    async def settle(self) -> None:
        """Wait until queued events and their follow-ups are handled (tests, benchmarks)."""
        await self._events.join()
        await self.sync.drain()

    async def _remove_temp(self, hypervisor_id: int, path: str) -> None:
        _, hv = await self.ctx.usable_hypervisor(hypervisor_id, allow_maintenance=True)
        await remove_files(hv, [path])

    # -- workflows ------------------------------------------------------------------------------

    async def create(self, data: dict[str, Any], *, actor: str = "") -> workflows_create.Created:
        """A simple/source VM (``name``) or a batch (``prefix`` + ``count``)."""
        model: type[NewVm] | type[NewBatch] = NewBatch if data.get("prefix") or data.get("count") else NewVm
        if model is NewBatch:
            data = {k: v for k, v in data.items() if k not in ("name", "disk_path")}
        else:
            data = {k: v for k, v in data.items() if k not in ("prefix", "count")}
        spec = _parse(model, data)
        return await workflows_create.create_vms(self.ctx, spec, actor=actor)

    async def create_initial(self, data: dict[str, Any], *, actor: str = "") -> workflows_create.Created:
        return await workflows_create.create_initial(self.ctx, _parse(NewInitial, data), actor=actor)

    async def create_vdi(self, data: dict[str, Any], *, actor: str = "") -> workflows_create.Created:
        return await workflows_create.create_vdi(self.ctx, _parse(NewVdi, data), actor=actor)

    async def copy_disk(self, initial_id: int, *, actor: str = "") -> int:
        return await workflows_disk.start_copy_disk(self.ctx, initial_id, actor=actor)

    async def populate(
        self, initial_id: int, *, actor: str = "", first_boot_timeout: float | None = None
    ) -> int:
        return await workflows_disk.start_populate(
            self.ctx, initial_id, actor=actor, first_boot_timeout=first_boot_timeout
        )

    async def power(self, vm_id: int, action: str, *, actor: str = "", client_address: str = "") -> Vm:
        """Start (volatile overlays prepared), shutdown, poweroff, reboot or reset one VM."""
        return await power_actions.power(self.ctx, vm_id, action, actor=actor, client_address=client_address)

    async def mass_power(self, initial_id: int, action: str, *, actor: str = "") -> int:
        return await power_actions.mass_power(self.ctx, initial_id, action, actor=actor)

    async def classify(
        self, vm_id: int, kind: str, parent_id: int | None, *, actor: str = "", client_address: str = ""
    ) -> Vm:
        return await workflows_manage.classify(
            self.ctx, vm_id, kind, parent_id, actor=actor, client_address=client_address
        )

    async def set_flags(
        self, vm_id: int, changes: dict[str, bool], *, actor: str = "", client_address: str = ""
    ) -> Vm:
        return await workflows_manage.set_flags(
            self.ctx, vm_id, changes, actor=actor, client_address=client_address
        )

    async def set_children_flags(
        self, initial_id: int, changes: dict[str, bool], *, actor: str = "", client_address: str = ""
    ) -> list[Vm]:
        return await workflows_manage.set_children_flags(
            self.ctx, initial_id, changes, actor=actor, client_address=client_address
        )

    async def change_media(
        self, vm_id: int, iso_path: str | None, *, actor: str = "", client_address: str = ""
    ) -> Vm:
        return await workflows_manage.change_media(
            self.ctx, vm_id, iso_path, actor=actor, client_address=client_address
        )

    async def plan_delete(
        self, vm_id: int, *, with_children: bool, remove_disks: bool
    ) -> workflows_manage.DeletePlan:
        return await workflows_manage.plan_delete(
            self.ctx, vm_id, with_children=with_children, remove_disks=remove_disks
        )

    async def delete(self, vm_id: int, **kwargs: Any) -> tuple[workflows_manage.DeletePlan, int | None]:
        return await workflows_manage.delete(self.ctx, vm_id, **kwargs)

    async def list_isos(self, hypervisor_id: int) -> list[str]:
        _, hv = await self.ctx.usable_hypervisor(hypervisor_id, allow_maintenance=True)
        return sorted(await hv.list_isos())


def _parse(model: Any, data: dict[str, Any]) -> Any:
    try:
        return parse(model, data)
    except DefinitionError as exc:
        raise Invalid(exc.errors) from None


def _connection_args(args: tuple[Any, ...]) -> tuple[int, str]:
    """Accept ``(hypervisor_id, state)`` or one event object with those attributes."""
    if len(args) >= 2:
        return int(args[0]), str(args[1])
    event = args[0]
    return int(event.hypervisor_id), str(event.state)
