"""What running guests' QEMU agents report (OS name, IP addresses), kept in memory and published.

A loop asks every running VM's agent every ``vms.agent_interval`` seconds (a
few at a time); guests without an agent simply have none. A change is
published as ``vm {id, guest}`` and the VM table and API show the last answer.
Shutting down uses the agent too where one answers (see
:func:`app.hyper.domains.shutdown`): it works when a guest ignores ACPI.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from app.hyper import HypervisorError
from app.hyper.agent import GuestInfo
from app.vms.context import VmContext
from app.vms.records import Vm, list_vms

log = logging.getLogger("kvmvdi.vms.agents")
CONCURRENCY = 4


class GuestAgents:
    def __init__(self, ctx: VmContext) -> None:
        self.ctx = ctx
        self._known: dict[int, GuestInfo] = {}
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0

    def get(self, vm_id: int) -> GuestInfo | None:
        return self._known.get(vm_id)

    def summary_of(self, vm_id: int) -> dict[str, Any] | None:
        found = self._known.get(vm_id)
        return found.summary() if found is not None else None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="vm-guest-agents")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        interval = max(0.5, self.ctx.settings.agent_interval)
        while True:
            started = time.monotonic()
            try:
                await self.refresh_all()
            except Exception as exc:  # the next round tries again
                log.warning("guest agent round failed: %s", exc)
            await asyncio.sleep(max(0.5, interval - (time.monotonic() - started)))

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
