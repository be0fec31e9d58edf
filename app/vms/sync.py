"""Keeping ``vms`` in step with what the hypervisors really run.

* When a hypervisor connects, and again after every reconnection (libvirt does
  not replay the events missed meanwhile), its domains are reconciled with the table: state
  and uuid updated, domains the dashboard does not know inserted as
  ``unclassified`` (an admin can then classify them), VMs whose domain vanished
  marked ``missing``, volatile overlays of stopped VMs removed.
* Each libvirt lifecycle event is published on the hub topic ``vm`` *first*
  and then stored: that path decides how fast browsers see a state change.
* Every stored state wakes the workflows waiting for it (:mod:`app.vms.waiting`).
* With several replicas, each receives every event, but only the holder of the
  background duties records and publishes; the others only wake their waiters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from app.clock import utcnow
from app.db.schema import vms
from app.hyper import DomainEvent, Hypervisor, HypervisorError
from app.i18n import gettext as _
from app.vms.context import VmContext
from app.vms.domain_xml import read_domain_facts
from app.vms.errors import VmError
from app.vms.records import Vm, insert_vm, list_vms, update_vm, vm_by_name
from app.vms.volatile import discard_after_stop, discard_stopped
from app.vms.waiting import state_after

log = logging.getLogger("kvmvdi.vms.sync")

RUNNING_STATES = frozenset({"running", "paused", "pmsuspended"})
STOPPED_STATES = frozenset({"shutoff", "crashed"})


class StateSync:
    def __init__(self, ctx: VmContext) -> None:
        self.ctx = ctx
        self._background: set[asyncio.Task[Any]] = set()
        self.events_seen = 0

    # -- events ------------------------------------------------------------------------------

    async def on_domain_event(self, event: DomainEvent) -> None:
        """A lifecycle event: publish at once, then store, then follow-up work in the background.

        Every event carries the domain's state after it (read at delivery when the event
        does not imply one), so the last event of a domain always tells where it is.
        """
        self.events_seen += 1
        hypervisor_id = event.hypervisor_id
        name = event.name
        state = state_after(event.state)
        if not self.ctx.recording():
            self.ctx.states.resolve(hypervisor_id, name, state)
            return
        db = self.ctx.db
        row = await db.fetch_one(vms.select().where(vms.c.name == name, vms.c.hypervisor_id == hypervisor_id))
        if row is None:
            if state != "missing":
                self.spawn(self.adopt_unknown(hypervisor_id, name))
            return
        vm = Vm.from_row(row)
        if state == vm.state:
            self.ctx.states.resolve(hypervisor_id, name, vm.state)
            return
        now = utcnow()
        self.ctx.hub.publish(
            "vm",
            {
                "id": vm.id,
                "name": vm.name,
                "hypervisor_id": hypervisor_id,
                "state": state,
                "state_changed_at": now.isoformat(),
                "reason": event.reason,
                "change": "state",
            },
        )
        values: dict[str, Any] = {"state": state, "state_changed_at": now}
        if event.uuid and event.uuid != vm.uuid and state != "missing":
            values["uuid"] = event.uuid
        await update_vm(db, vm.id, **values)
        self.ctx.states.resolve(hypervisor_id, name, state)
        if state in STOPPED_STATES and vm.volatile:
            self.spawn(self._discard(vm))

    async def _discard(self, vm: Vm) -> None:
        await discard_after_stop(self.ctx, vm, self.ctx.hypervisor(vm.hypervisor_id, new_work=False))

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("VM state follow-up failed: %s", task.exception())

    async def drain(self) -> None:
        """Wait for background follow-ups (tests, shutdown)."""
        while self._background:
            await asyncio.wait(set(self._background))

    async def stop(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.wait(set(self._background), timeout=10)
        self.ctx.states.cancel_all()

    # -- connections -------------------------------------------------------------------------

    async def on_connection(self, hypervisor_id: int, state: str) -> None:
        if state == "up":
            await self.reconcile(hypervisor_id)
        else:
            await self.mark_unknown(hypervisor_id)

    async def mark_unknown(self, hypervisor_id: int) -> None:
        """The hypervisor is down: nobody knows what its VMs do."""
        now = utcnow()
        for vm in await list_vms(self.ctx.db, hypervisor_id=hypervisor_id):
            if vm.state != "unknown":
                await update_vm(self.ctx.db, vm.id, state="unknown", state_changed_at=now)
                self.ctx.hub.publish(
                    "vm",
                    {
                        "id": vm.id,
                        "name": vm.name,
                        "hypervisor_id": hypervisor_id,
                        "state": "unknown",
                        "state_changed_at": now.isoformat(),
                        "change": "state",
                    },
                )

    async def reconcile(self, hypervisor_id: int) -> dict[str, list[str]]:
        """Bring the table in line with the hypervisor's domains; what changed, by kind of change.

        Runs whenever a hypervisor (re)connects: libvirt does not replay the events
        missed while the connection was away, so the listing is the truth.
        """
        ctx = self.ctx
        hv = ctx.hypervisor(hypervisor_id, new_work=False)
        domains = await hv.list_domains()
        known = await list_vms(ctx.db, hypervisor_id=hypervisor_id)
        by_uuid = {vm.uuid: vm for vm in known if vm.uuid}
        by_name = {vm.name: vm for vm in known}
        seen: set[int] = set()
        report: dict[str, list[str]] = {"updated": [], "adopted": [], "missing": [], "conflicts": []}
        now = utcnow()
        for domain in domains:
            state = state_after(domain.state)
            vm = by_uuid.get(domain.uuid) or by_name.get(domain.name)
            if vm is None:
                added = await self._insert_unclassified(hv, domain.name, domain.uuid, state)
                report["adopted" if added else "conflicts"].append(domain.name)
                continue
            seen.add(vm.id)
            values: dict[str, Any] = {}
            if vm.state != state:
                values.update(state=state, state_changed_at=now)
            if domain.uuid and vm.uuid != domain.uuid:
                values["uuid"] = domain.uuid
            if values:
                await update_vm(ctx.db, vm.id, **values)
                await ctx.refresh(vm.id, "state")
                report["updated"].append(domain.name)
        for vm in known:
            if vm.id in seen or vm.operation_id is not None or vm.state == "missing":
                continue
            await update_vm(ctx.db, vm.id, state="missing", state_changed_at=now)
            await ctx.refresh(vm.id, "state")
            report["missing"].append(vm.name)
        try:
            await self._discard_stale_overlays(hv)
        except Exception as exc:
            log.warning("removing stale volatile overlays on %s failed: %s", hv.name, exc)
        await ctx.operations.clean_up_for(hypervisor_id)
        if report["conflicts"]:
            ctx.hub.publish(
                "toast",
                {
                    "level": "warning",
                    "message": _(
                        "Hypervisor {name} runs domains whose names other VMs already use: {names}"
                    ).format(name=hv.name, names=", ".join(report["conflicts"]))
                    + ". Rename them on the hypervisor to manage them here.",
                },
            )
        return report

    async def _discard_stale_overlays(self, hv: Hypervisor) -> None:
        """Remove the per-boot overlays of every stopped VM (stops missed while away), in one command.

        The VMs' overlay locks are held meanwhile, so no start can be preparing an
        overlay that this removes; the states are read with the locks held.
        """
        ctx = self.ctx
        candidates = [
            vm
            for vm in await list_vms(ctx.db, hypervisor_id=hv.id)
            if vm.operation_id is None and vm.disk_path
        ]
        async with contextlib.AsyncExitStack() as stack:
            for vm in candidates:
                await stack.enter_async_context(ctx.overlay_lock(vm.id))
            states = {domain.name: domain.state for domain in await hv.list_domains()}
            stopped = [vm for vm in candidates if states.get(vm.name) not in RUNNING_STATES]
            await discard_stopped(hv, stopped)

    async def adopt_unknown(self, hypervisor_id: int, name: str) -> bool:
        """A domain appeared behind the dashboard's back (an event): insert it as unclassified."""
        try:
            hv = self.ctx.hypervisor(hypervisor_id, new_work=False)
            domains = {domain.name: domain for domain in await hv.list_domains()}
        except (HypervisorError, VmError) as exc:
            log.info("domain %s on hypervisor %s not adopted yet: %s", name, hypervisor_id, exc)
            return False
        domain = domains.get(name)
        if domain is None:
            return False
        return await self._insert_unclassified(hv, name, domain.uuid, state_after(domain.state))

    async def _insert_unclassified(self, hv: Hypervisor, name: str, uuid: str, state: str) -> bool:
        ctx = self.ctx
        if await vm_by_name(ctx.db, name) is not None:
            # Names are unique per dashboard: a same-named domain elsewhere cannot be managed here.
            return False
        values: dict[str, Any] = {}
        try:
            facts = read_domain_facts(await hv.domain_xml(name))
            values = {
                "memory_mib": facts.memory_mib,
                "vcpu_sockets": facts.vcpu_sockets,
                "vcpu_cores": facts.vcpu_cores,
                "disk_path": facts.disk_path,
                "disk_format": facts.disk_format,
                "iso_path": facts.iso_path,
                "network": facts.network,
                "mac_address": facts.mac_address,
                "boot_order": ",".join(facts.boot_order),
            }
        except (HypervisorError, ValueError) as exc:
            log.info("reading the definition of %s failed: %s", name, exc)
        try:
            vm_id = await insert_vm(
                ctx.db,
                name=name,
                uuid=uuid or None,
                hypervisor_id=hv.id,
                kind="unclassified",
                state=state,
                state_changed_at=utcnow(),
                **values,
            )
        except Exception as exc:
            log.info("domain %s not inserted: %s", name, exc)
            return False
        await ctx.refresh(vm_id, "created")
        log.info("domain %s on hypervisor %s appears as unclassified", name, hv.name)
        return True
