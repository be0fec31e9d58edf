"""Keeping ``vms`` in step with what the hypervisors really run.

* When a hypervisor connects, its domains are reconciled with the table: state
  and uuid updated, domains the dashboard does not know inserted as
  ``unclassified`` (an admin can then classify them), VMs whose domain vanished
  marked ``missing``, volatile overlays of stopped VMs removed.
* Each libvirt lifecycle event is published on the hub topic ``vm`` *first*
  and then stored: that path decides how fast browsers see a state change.
* :meth:`StateSync.wait_for` lets workflows wait for a domain state (populate
  waits for each first boot to end) on events, with a slow re-check as backstop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from app.clock import utcnow
from app.db.schema import vms
from app.vms.context import VmContext
from app.vms.definition import read_domain_facts
from app.vms.records import Vm, insert_vm, list_vms, update_vm, vm_by_name
from app.vms.volatile import discard_after_stop, discard_stopped

log = logging.getLogger("kvmvdi.vms.sync")

RUNNING_STATES = frozenset({"running", "paused", "pmsuspended"})
STOPPED_STATES = frozenset({"shutoff", "crashed"})

# libvirt lifecycle events (as names) -> the domain state they leave behind; None: unchanged.
_EVENT_STATES: dict[str, str | None] = {
    "started": "running",
    "resumed": "running",
    "suspended": "paused",
    "stopped": "shutoff",
    "crashed": "crashed",
    "pmsuspended": "pmsuspended",
    "shutdown": None,  # the guest is shutting down; STOPPED follows
    "defined": None,
    "undefined": "missing",
    "shutoff": "shutoff",
    "shut off": "shutoff",
    "running": "running",
    "paused": "paused",
    "blocked": "running",
    "nostate": "unknown",
    "unknown": "unknown",
}


def state_after(event_state: str) -> str | None:
    """The VM state an event (or a reported domain state) leaves the VM in."""
    key = str(event_state).strip().lower()
    if key in _EVENT_STATES:
        return _EVENT_STATES[key]
    return key or None


Waiter = tuple[frozenset[str], "asyncio.Future[str]"]


class StateSync:
    def __init__(self, ctx: VmContext) -> None:
        self.ctx = ctx
        self._waiters: dict[tuple[int, str], list[Waiter]] = defaultdict(list)
        self._background: set[asyncio.Task[Any]] = set()
        self.events_seen = 0

    # -- events ------------------------------------------------------------------------------

    async def on_domain_event(self, event: Any) -> None:
        """A lifecycle event: publish at once, then store, then follow-up work in the background."""
        self.events_seen += 1
        hypervisor_id = int(event.hypervisor_id)
        name = str(event.name)
        state = state_after(str(event.state))
        db = self.ctx.db
        row = await db.fetch_one(vms.select().where(vms.c.name == name, vms.c.hypervisor_id == hypervisor_id))
        if row is None:
            if state != "missing":
                self._spawn(self.adopt_unknown(hypervisor_id, name))
            return
        vm = Vm.from_row(row)
        if state is None or state == vm.state:
            self._resolve(hypervisor_id, name, vm.state)
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
                "reason": str(getattr(event, "reason", "") or ""),
                "change": "state",
            },
        )
        values: dict[str, Any] = {"state": state, "state_changed_at": now}
        uuid = getattr(event, "uuid", None)
        if uuid and uuid != vm.uuid:
            values["uuid"] = str(uuid)
        await update_vm(db, vm.id, **values)
        self._resolve(hypervisor_id, name, state)
        if state in STOPPED_STATES and vm.volatile:
            self._spawn(self._discard(vm))

    async def _discard(self, vm: Vm) -> None:
        record, hv = await self.ctx.usable_hypervisor(vm.hypervisor_id, allow_maintenance=True)
        await discard_after_stop(self.ctx, vm, record, hv)

    def _spawn(self, coroutine: Any) -> None:
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
        for waiters in self._waiters.values():
            for _, future in waiters:
                future.cancel()

    # -- waiting for a state -----------------------------------------------------------------

    def _resolve(self, hypervisor_id: int, name: str, state: str) -> None:
        waiters = self._waiters.get((hypervisor_id, name))
        if not waiters:
            return
        for states, future in list(waiters):
            if state in states and not future.done():
                future.set_result(state)

    async def wait_for(
        self,
        hypervisor_id: int,
        name: str,
        states: Iterable[str],
        *,
        within: float,
        hv: Any = None,
        recheck: float = 2.0,
    ) -> str | None:
        """Wait until the domain reaches one of ``states``; the state, or None after ``within`` s.

        Events resolve the wait; with ``hv`` the state is also re-read every ``recheck``
        seconds, so a lost event costs a little time, never the whole timeout.
        """
        wanted = frozenset(states)
        key = (hypervisor_id, name)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters[key].append((wanted, future))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                if hv is not None:
                    try:
                        current = state_after(await hv.domain_state(name))
                    except Exception:
                        current = None
                    if current in wanted:
                        return current
                try:
                    return await asyncio.wait_for(asyncio.shield(future), min(remaining, recheck))
                except TimeoutError:
                    continue
        finally:
            waiters = self._waiters.get(key, [])
            waiters[:] = [(s, f) for s, f in waiters if f is not future]
            if not waiters:
                self._waiters.pop(key, None)
            if not future.done():
                future.cancel()

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
        """Bring the table in line with the hypervisor's domains; what changed, by kind of change."""
        ctx = self.ctx
        record, hv = await ctx.usable_hypervisor(hypervisor_id, allow_maintenance=True)
        domains = list(await hv.list_domains())
        known = await list_vms(ctx.db, hypervisor_id=hypervisor_id)
        by_uuid = {vm.uuid: vm for vm in known if vm.uuid}
        by_name = {vm.name: vm for vm in known}
        seen: set[int] = set()
        report: dict[str, list[str]] = {"updated": [], "adopted": [], "missing": [], "conflicts": []}
        now = utcnow()
        for domain in domains:
            name = str(domain.name)
            uuid = str(getattr(domain, "uuid", "") or "")
            state = state_after(str(domain.state)) or "unknown"
            vm = by_uuid.get(uuid) or by_name.get(name)
            if vm is None:
                added = await self._insert_unclassified(hypervisor_id, name, uuid, state, hv)
                report["adopted" if added else "conflicts"].append(name)
                continue
            seen.add(vm.id)
            values: dict[str, Any] = {}
            if vm.state != state:
                values.update(state=state, state_changed_at=now)
            if uuid and vm.uuid != uuid:
                values["uuid"] = uuid
            if values:
                await update_vm(ctx.db, vm.id, **values)
                await ctx.refresh(vm.id, "state")
                report["updated"].append(name)
        for vm in known:
            if vm.id in seen or vm.operation_id is not None or vm.state == "missing":
                continue
            await update_vm(ctx.db, vm.id, state="missing", state_changed_at=now)
            await ctx.refresh(vm.id, "state")
            report["missing"].append(vm.name)
        stopped = [
            vm
            for vm in await list_vms(ctx.db, hypervisor_id=hypervisor_id)
            if vm.state not in RUNNING_STATES and vm.operation_id is None
        ]
        try:
            await discard_stopped(hv, record, stopped)
        except Exception as exc:
            log.warning("removing stale volatile overlays on %s failed: %s", record.name, exc)
        await ctx.operations.clean_up_for(hypervisor_id)
        if report["conflicts"]:
            ctx.hub.publish(
                "toast",
                {
                    "level": "warning",
                    "message": f"Hypervisor {record.name} runs domains whose names other VMs already use: "
                    + ", ".join(report["conflicts"])
                    + ". Rename them on the hypervisor to manage them here.",
                },
            )
        return report

    async def adopt_unknown(self, hypervisor_id: int, name: str) -> bool:
        """A domain appeared behind the dashboard's back (an event): insert it as unclassified."""
        try:
            _, hv = await self.ctx.usable_hypervisor(hypervisor_id, allow_maintenance=True)
            state = state_after(await hv.domain_state(name)) or "unknown"
            domains = {str(d.name): d for d in await hv.list_domains()}
        except Exception as exc:
            log.info("domain %s on hypervisor %s not adopted yet: %s", name, hypervisor_id, exc)
            return False
        domain = domains.get(name)
        if domain is None:
            return False
        uuid = str(getattr(domain, "uuid", ""))
        return await self._insert_unclassified(hypervisor_id, name, uuid, state, hv)

    async def _insert_unclassified(
        self, hypervisor_id: int, name: str, uuid: str, state: str, hv: Any
    ) -> bool:
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
                "iso_path": facts.iso_path,
                "network": facts.network,
                "mac_address": facts.mac_address,
                "boot_order": ",".join(facts.boot_order),
            }
        except Exception as exc:
            log.info("reading the definition of %s failed: %s", name, exc)
        try:
            vm_id = await insert_vm(
                ctx.db,
                name=name,
                uuid=uuid or None,
                hypervisor_id=hypervisor_id,
                kind="unclassified",
                state=state,
                state_changed_at=utcnow(),
                **values,
            )
        except Exception as exc:
            log.info("domain %s not inserted: %s", name, exc)
            return False
        await ctx.refresh(vm_id, "created")
        log.info("domain %s on hypervisor %s appears as unclassified", name, hypervisor_id)
        return True
