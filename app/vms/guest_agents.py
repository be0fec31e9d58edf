"""What running guests' QEMU agents report (OS name, IP addresses), kept in memory and published.

A loop asks every running VM's agent every ``vms.agent_interval`` seconds (a
few at a time); guests without an agent simply have none. A change is
published as ``vm {id, guest}`` and the VM table and API show the last answer.
Shutting down uses the agent too where one answers (see
:func:`app.hyper.domains.shutdown`): it works when a guest ignores ACPI.

The loop is a background duty (:mod:`app.cluster.duties`): with several replicas one of them
asks the guests, and after each round it hands every answer to the other replicas over the
cluster bus (:data:`CHANNEL`), which keep them in memory to serve the table and the API. A
replica that starts, or a new duty holder, has them all again within one round.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from app.cluster.bus import Bus
from app.hyper import HypervisorError
from app.hyper.agent import GuestInfo
from app.vms.context import VmContext
from app.vms.records import Vm, list_vms

log = logging.getLogger("kvmvdi.vms.agents")
CONCURRENCY = 4
# Cluster bus channel: every answer the duty holder has, after each round.
CHANNEL = "guest-agents"


class GuestAgents:
    def __init__(self, ctx: VmContext, bus: Bus) -> None:
        self.ctx = ctx
        self._bus = bus
        self._known: dict[int, GuestInfo] = {}
        self.rounds = 0
        bus.subscribe(CHANNEL, self._from_holder)

    def get(self, vm_id: int) -> GuestInfo | None:
        return self._known.get(vm_id)

    def summary_of(self, vm_id: int) -> dict[str, Any] | None:
        found = self._known.get(vm_id)
        return found.summary() if found is not None else None

    async def run(self) -> None:
        """Ask the guests every ``agent_interval`` seconds, until cancelled (a background duty)."""
        interval = max(0.5, self.ctx.settings.agent_interval)
        while True:
            started = time.monotonic()
            try:
                await self.refresh_all()
            except Exception as exc:  # the next round tries again
                log.warning("guest agent round failed: %s", exc)
            answers = {str(vm_id): info.summary() for vm_id, info in self._known.items()}
            self._bus.publish(CHANNEL, {"guests": answers})
            await asyncio.sleep(max(0.5, interval - (time.monotonic() - started)))

    def _from_holder(self, message: dict[str, Any]) -> None:
        """The duty holder's answers: what this replica shows from now on."""
        guests = message.get("guests")
        if not isinstance(guests, dict):
            return
        known: dict[int, GuestInfo] = {}
        for vm_id, summary in guests.items():
            try:
                known[int(vm_id)] = GuestInfo(
                    os_name=str(summary["os_name"]), addresses=tuple(str(a) for a in summary["addresses"])
                )
            except (KeyError, TypeError, ValueError):
                log.warning("unreadable guest agent answer for VM %s from the cluster bus", vm_id)
        self._known = known

    async def refresh_all(self) -> int:
        """Ask every running guest once; how many answers changed."""
        self.rounds += 1
        running = [vm for vm in await list_vms(self.ctx.db) if vm.state == "running"]
        ids = {vm.id for vm in running}
        for vm_id in [vm_id for vm_id in self._known if vm_id not in ids]:
            del self._known[vm_id]
        limit = asyncio.Semaphore(CONCURRENCY)

        async def one(vm: Vm) -> bool:
            async with limit:
                return await self.refresh(vm)

        return sum(await asyncio.gather(*(one(vm) for vm in running)))

    async def refresh(self, vm: Vm) -> bool:
        try:
            hv = self.ctx.registry.get(vm.hypervisor_id)
            info = await hv.guest_info(vm.name)
        except HypervisorError as exc:
            log.debug("no guest agent answer from %s: %s", vm.name, exc)
            return False
        if info == self._known.get(vm.id):
            return False
        if info is None:
            self._known.pop(vm.id, None)
        else:
            self._known[vm.id] = info
        guest = info.summary() if info is not None else None
        self.ctx.hub.publish("vm", {"id": vm.id, "name": vm.name, "guest": guest, "change": "guest"})
        return True
