"""Thumbnails of running VMs' screens, refreshed by the server while admins watch.

No browser polls: while at least one admin browser is connected to the live
hub (client portals do not count), a loop takes a screenshot of every running VM (a few at a time, scaled to
about 160 px wide by the hypervisor layer), keeps the PNG in memory and, when
the picture changed, publishes ``vm`` ``{id, thumbnail: version}``. The VM page
then swaps the ``<img src>`` of rows that are in view.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass

from app.hyper import HypervisorError
from app.vms.context import VmContext
from app.vms.records import Vm, list_vms

log = logging.getLogger("kvmvdi.vms.thumbnails")


@dataclass(frozen=True)
class Thumbnail:
    version: int
    png: bytes
    digest: str
    taken_at: float


class Thumbnails:
    def __init__(self, ctx: VmContext) -> None:
        self.ctx = ctx
        self._cache: dict[int, Thumbnail] = {}
        self._task: asyncio.Task[None] | None = None
        self._version = 0
        self.rounds = 0

    def get(self, vm_id: int) -> Thumbnail | None:
        return self._cache.get(vm_id)

    def version_of(self, vm_id: int) -> int | None:
        thumbnail = self._cache.get(vm_id)
        return thumbnail.version if thumbnail else None

    def forget(self, vm_id: int) -> None:
        self._cache.pop(vm_id, None)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="vm-thumbnails")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _watched(self) -> bool:
        # Thumbnails are shown on admin pages only; client portals do not count.
        return self.ctx.hub.admin_subscriber_count > 0

    async def _loop(self) -> None:
        interval = max(0.5, self.ctx.settings.thumbnail_interval)
        while True:
            started = time.monotonic()
            if self._watched():
                try:
                    await self.refresh_all()
                except Exception as exc:  # the next round tries again
                    log.warning("thumbnail round failed: %s", exc)
            await asyncio.sleep(max(0.5, interval - (time.monotonic() - started)))

    async def refresh_all(self) -> int:
        """One round over the running VMs; how many thumbnails changed."""
        self.rounds += 1
        running = [vm for vm in await list_vms(self.ctx.db) if vm.state == "running"]
        running_ids = {vm.id for vm in running}
        for vm_id in list(self._cache):
            if vm_id not in running_ids:
                del self._cache[vm_id]
        limit = asyncio.Semaphore(max(1, self.ctx.settings.thumbnail_concurrency))

        async def one(vm: Vm) -> bool:
            async with limit:
                return await self.refresh(vm)

        results = await asyncio.gather(*(one(vm) for vm in running))
        return sum(1 for changed in results if changed)

    async def refresh(self, vm: Vm) -> bool:
        """Take one screenshot; True (and a ``vm`` message) when the picture changed."""
        try:
            hv = self.ctx.registry.get(vm.hypervisor_id)
            png = await hv.screenshot_png(vm.name, max_width=self.ctx.settings.thumbnail_width)
        except HypervisorError as exc:
            log.debug("no thumbnail of %s: %s", vm.name, exc)
            return False
        digest = hashlib.sha256(png).hexdigest()
        previous = self._cache.get(vm.id)
        if previous is not None and previous.digest == digest:
            return False
        self._version += 1
        self._cache[vm.id] = Thumbnail(self._version, png, digest, time.time())
        self.ctx.hub.publish(
            "vm", {"id": vm.id, "name": vm.name, "thumbnail": self._version, "change": "thumbnail"}
        )
        return True
