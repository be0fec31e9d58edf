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
from collections.abc import Callable, Sequence
from typing import Any

from databases import Database

from app.audit import AuditLog
from app.cluster.bus import Bus, LocalBus
from app.cluster.duties import Duties, every
from app.db.health import log_failure
from app.db.records import PoolRecord, fetch_record
from app.db.schema import pool_vms, pools
from app.hyper import ConnectionEvent, DiskFile, DomainEvent, HypervisorError, HypervisorRegistry
from app.hyper.errors import DirectoryMissing
from app.i18n import gettext as _
from app.live.hub import LiveHub
from app.settings import VmSettings
from app.vms import (
    device_policy,
    dhcp,
    importing,
    machine,
    workflows_create,
    workflows_disk,
    workflows_manage,
)
from app.vms import power as power_actions
from app.vms.context import VmContext
from app.vms.disks import remove_files
from app.vms.domain_xml import DevicePolicy
from app.vms.errors import HypervisorFailure, Invalid, Refused
from app.vms.guest_agents import GuestAgents
from app.vms.images import ImageService
from app.vms.operations import OperationListener, OperationsRunner
from app.vms.parameters import DefinitionError, NewBatch, NewInitial, NewVdi, NewVm, parse
from app.vms.records import Vm
from app.vms.snapshots import SnapshotService
from app.vms.sync import StateSync
from app.vms.thumbnails import Thumbnails, ThumbnailStore

log = logging.getLogger("kvmvdi.vms")


class VmService:
    def __init__(
        self,
        *,
        db: Database,
        hub: LiveHub,
        audit: AuditLog,
        registry: HypervisorRegistry,
        settings: VmSettings,
        operation_listeners: Sequence[OperationListener] = (),
        duties: Duties | None = None,
        replica: str = "",
        thumbnail_store: ThumbnailStore | None = None,
        admin_watchers: Callable[[], int] | None = None,
        alive_replicas: Callable[[], set[str]] | None = None,
        bus: Bus | None = None,
    ) -> None:
        # Long operations (copy disk, populate ...); their temporary files are removed through here.
        # Without duties handed in, this service holds its own (one process, from the start).
        self._own_duties = duties is None
        duties = duties or Duties()
        operations = OperationsRunner(
            db,
            hub,
            remove_temp=self._remove_temp,
            listeners=operation_listeners,
            replica=replica,
            clustered=duties.clustered,
        )
        self.ctx = VmContext(
            db=db,
            hub=hub,
            audit=audit,
            registry=registry,
            operations=operations,
            settings=settings,
            duties=duties,
        )
        self.sync = StateSync(self.ctx)
        self.thumbnails = Thumbnails(self.ctx, store=thumbnail_store, watchers=admin_watchers)
        self.agents = GuestAgents(self.ctx, bus or LocalBus())
        self.images = ImageService(self.ctx)
        self.snapshots = SnapshotService(self.ctx)
        self.operations = operations
        self._duties = duties
        self._alive_replicas = alive_replicas
        # Hypervisor id -> the connection last reconciled (a repeated "up" re-reads nothing).
        self._reconciled: dict[int, int] = {}
        self._events: asyncio.Queue[DomainEvent | ConnectionEvent] = asyncio.Queue()
        self._consumer: asyncio.Task[None] | None = None
        self._unsubscribe: list[Any] = []

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.operations.recover()
        self._consumer = asyncio.create_task(self._consume_events(), name="vm-events")
        registry = self.ctx.registry
        self._unsubscribe = [
            registry.add_domain_listener(self._events.put_nowait),
            registry.add_connection_listener(self._events.put_nowait),
        ]
        # One replica asks the guest agents and hands their answers to the others (the bus).
        self._duties.add("guest-agents", self.agents.run)
        self._duties.add("thumbnails", self.thumbnails.run)
        if self._alive_replicas is not None:
            alive = self._alive_replicas
            self._duties.add(
                "interrupt-operations",
                lambda: every(
                    2.0, lambda: self.operations.interrupt_gone(alive()), what="operations of gone replicas"
                ),
            )
        self._duties.on_gained(self.take_over)
        if self._own_duties:
            await self._duties.start()
        # Hypervisors that connected before these listeners existed are reconciled now.
        self._reconcile_connected()

    def _reconcile_connected(self) -> None:
        for hv in self.ctx.registry.all():
            if hv.state == "up" and hv.connected:
                self._events.put_nowait(ConnectionEvent(hv.id, hv.name, "up", "", hv.maintenance))

    async def take_over(self) -> None:
        """This replica now records VM state: reconcile every connected hypervisor (events were
        recorded by another replica until now, or by nobody for a few seconds)."""
        self._reconciled.clear()
        self._reconcile_connected()

    async def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        if self._own_duties:
            await self._duties.stop()
        await self.operations.stop()
        if self._consumer is not None:
            self._consumer.cancel()
            await asyncio.gather(self._consumer, return_exceptions=True)
        await self.sync.stop()

    async def _consume_events(self) -> None:
        # One queue for both kinds: a domain's events are stored in the order they happened.
        up = self._reconciled
        while True:
            event = await self._events.get()
            try:
                if isinstance(event, DomainEvent):
                    await self.sync.on_domain_event(event)
                elif not self.ctx.recording():
                    # Another replica records; this one reconciles when it takes the duties over.
                    up.pop(event.hypervisor_id, None)
                elif event.state == "up":
                    found = self.ctx.registry.find(event.hypervisor_id)
                    connection = found.connections if found is not None else 0
                    # A maintenance change repeats "up" on the same connection: nothing to re-read.
                    if up.get(event.hypervisor_id) != connection:
                        up[event.hypervisor_id] = connection
                        # Reconciling lists every domain: off the event path so events keep flowing.
                        self.sync.spawn(self.sync.reconcile(event.hypervisor_id))
                else:
                    up.pop(event.hypervisor_id, None)
                    self.sync.spawn(self.sync.mark_unknown(event.hypervisor_id))
            except Exception:
                log_failure(log, "handling %r failed", event)
            finally:
                self._events.task_done()

    async def settle(self) -> None:
        """Wait until queued events and their follow-ups are handled (tests, benchmarks)."""
        await self._events.join()
        await self.sync.drain()

    async def _remove_temp(self, hypervisor_id: int, path: str) -> None:
        await remove_files(self.ctx.hypervisor(hypervisor_id, new_work=False), [path])

    # -- workflows ------------------------------------------------------------------------------

    async def create(
        self, data: NewVm | NewBatch | dict[str, Any], *, actor: str = ""
    ) -> workflows_create.Created:
        """A simple/source VM (``name``) or a batch (``prefix`` + ``count``).

        ``data`` is a validated model (the JSON API) or a form's text fields.
        """
        if isinstance(data, NewVm | NewBatch):
            return await workflows_create.create_vms(self.ctx, data, actor=actor)
        model: type[NewVm] | type[NewBatch] = NewBatch if data.get("prefix") or data.get("count") else NewVm
        if model is NewBatch:
            data = {k: v for k, v in data.items() if k not in ("name", "disk_path")}
        else:
            data = {k: v for k, v in data.items() if k not in ("prefix", "count")}
        return await workflows_create.create_vms(self.ctx, _parse(model, data), actor=actor)

    async def create_initial(
        self, data: NewInitial | dict[str, Any], *, actor: str = ""
    ) -> workflows_create.Created:
        spec = data if isinstance(data, NewInitial) else _parse(NewInitial, data)
        return await workflows_create.create_initial(self.ctx, spec, actor=actor)

    async def create_vdi(self, data: NewVdi | dict[str, Any], *, actor: str = "") -> workflows_create.Created:
        spec = data if isinstance(data, NewVdi) else _parse(NewVdi, data)
        return await workflows_create.create_vdi(self.ctx, spec, actor=actor)

    async def copy_disk(self, initial_id: int, *, actor: str = "") -> int:
        """Publish a new image version copied from the source's disk."""
        return await self.images.publish(initial_id, origin="source", actor=actor)

    async def populate(
        self,
        initial_id: int,
        *,
        actor: str = "",
        wait_first_boot: bool = False,
        first_boot_timeout: float | None = None,
    ) -> int:
        """Recreate every child's overlay and start each once; optionally wait for the first boots."""
        return await workflows_disk.start_populate(
            self.ctx,
            initial_id,
            actor=actor,
            wait_first_boot=wait_first_boot,
            first_boot_timeout=first_boot_timeout,
        )

    async def power(
        self,
        vm_id: int,
        action: str,
        *,
        actor: str = "",
        client_address: str = "",
        confirm_children: list[str] | None = None,
    ) -> Vm:
        """Start (volatile overlays prepared), shutdown, poweroff, reboot or reset one VM.

        Starting an initial machine whose own disk VDI machines run on needs
        ``confirm_children`` (exactly those machines): they are forced off and put in
        maintenance first. Resetting a running VDI machine nobody holds is its fresh boot on
        its initial's target image version when it is behind (never under a user).
        """
        vm = await self.ctx.vm(vm_id)
        if action == "start" and vm.kind == "initial":
            await self.images.clear_for_start(vm, confirm_children, actor=actor)
        idle_desktop = vm.kind == "vdi" and vm.assigned_user_id is None and vm.state == "running"
        if action == "reset" and idle_desktop and await self.images.move_desktop(vm.id, actor=actor):
            await self.ctx.audit.record(
                "vm_reset", actor=actor, target=vm.name, client_address=client_address
            )
            return await self.ctx.vm(vm.id)
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
        self, vm_id: int, iso_path: str | None, *, drive: int = 1, actor: str = "", client_address: str = ""
    ) -> Vm:
        return await workflows_manage.change_media(
            self.ctx, vm_id, iso_path, drive=drive, actor=actor, client_address=client_address
        )

    async def set_policy(
        self, vm_id: int, changes: dict[str, Any], *, actor: str = "", client_address: str = ""
    ) -> Vm:
        """Clipboard, file transfer, USB redirection of a VM that is in no pool (pools set their own)."""
        return await device_policy.set_vm_policy(
            self.ctx, vm_id, changes, actor=actor, client_address=client_address
        )

    async def set_fixed_address(
        self, vm_id: int, address: str | None, *, actor: str = "", client_address: str = ""
    ) -> Vm:
        """The IPv4 address the DHCP export gives the VM (None: none)."""
        return await dhcp.set_fixed_address(
            self.ctx, vm_id, address, actor=actor, client_address=client_address
        )

    async def apply_pool_policy(self, pool_id: int, vm_ids: list[int] | None = None) -> list[str]:
        """The pool's device policy onto its desktops (or just ``vm_ids``, newly added); the names
        of those running, which get it at their next start."""
        pool = await fetch_record(self.ctx.db, PoolRecord, pools.select().where(pools.c.id == pool_id))
        if pool is None:
            return []
        if vm_ids is None:
            rows = await self.ctx.db.fetch_all(pool_vms.select().where(pool_vms.c.pool_id == pool_id))
            vm_ids = [row._mapping["vm_id"] for row in rows]
        policy = DevicePolicy(pool.clipboard, pool.file_transfer, pool.usb_redirect)
        return await device_policy.apply(self.ctx, vm_ids, policy)

    async def offers(self, hypervisor_id: int) -> dict[str, Any]:
        """What the VM form may offer on this hypervisor (UEFI, Secure Boot, TPM, CPU modes) and why not."""
        hv = self.ctx.hypervisor(hypervisor_id, new_work=False)
        return await machine.offers(hv, self.ctx.settings.domain_type)

    async def plan_delete(
        self, vm_id: int, *, with_children: bool, remove_disks: bool
    ) -> workflows_manage.DeletePlan:
        return await workflows_manage.plan_delete(
            self.ctx, vm_id, with_children=with_children, remove_disks=remove_disks
        )

    async def delete(self, vm_id: int, **kwargs: Any) -> tuple[workflows_manage.DeletePlan, int | None]:
        return await workflows_manage.delete(self.ctx, vm_id, **kwargs)

    async def list_images(self, hypervisor_id: int) -> list[importing.ImageChoice]:
        """Images of the hypervisor's images directory a new VM can be made on."""
        return await importing.image_choices(self.ctx, self.ctx.hypervisor(hypervisor_id, new_work=False))

    async def list_isos(self, hypervisor_id: int) -> list[DiskFile]:
        try:
            return await self.ctx.hypervisor(hypervisor_id, new_work=False).list_isos()
        except DirectoryMissing as exc:
            # The record names a directory the host lacks: the admin's to fix, nothing failed.
            message = _("{problem}: create it, or change the hypervisor's ISO directory").format(problem=exc)
            raise Refused(message, code="iso_dir_missing") from exc
        except HypervisorError as exc:
            raise HypervisorFailure(_("listing the hypervisor's ISOs failed: {exc}").format(exc=exc)) from exc


def _parse(model: Any, data: dict[str, Any]) -> Any:
    try:
        return parse(model, data)
    except DefinitionError as exc:
        raise Invalid(exc.errors) from None
