"""Thumbnails of running VMs' screens, refreshed by the server while admins watch.

No browser polls: while at least one admin browser is connected to the live
hub (client portals do not count), a loop takes a screenshot of every running VM (a few at a time, scaled to
about 160 px wide by the hypervisor layer), keeps the PNG and, when
the picture changed, publishes ``vm`` ``{id, thumbnail: version}``. The VM page
then swaps the ``<img src>`` of rows that are in view.

One process keeps the pictures in memory. With several replicas the loop is a
background duty (one replica takes them, while an admin watches on any replica) and
the pictures go to Redis, where every replica serves them from.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

from redis import asyncio as aioredis
from redis.exceptions import RedisError

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


class ThumbnailStore(Protocol):
    async def get(self, vm_id: int) -> Thumbnail | None: ...

    async def versions(self, vm_ids: Collection[int]) -> dict[int, int]: ...

    async def put(self, vm_id: int, thumbnail: Thumbnail) -> None: ...

    async def retain(self, vm_ids: Collection[int]) -> set[int]:
        """Keep the pictures of ``vm_ids`` (forget the others); those of ``vm_ids`` it does not have."""
        ...

    async def next_version(self) -> int: ...


class MemoryThumbnails:
    """One process: the pictures in its memory."""

    def __init__(self) -> None:
        self._cache: dict[int, Thumbnail] = {}
        self._version = 0

    async def get(self, vm_id: int) -> Thumbnail | None:
        return self._cache.get(vm_id)

    async def versions(self, vm_ids: Collection[int]) -> dict[int, int]:
        return {vm_id: found.version for vm_id in vm_ids if (found := self._cache.get(vm_id)) is not None}

    async def put(self, vm_id: int, thumbnail: Thumbnail) -> None:
        self._cache[vm_id] = thumbnail

    async def retain(self, vm_ids: Collection[int]) -> set[int]:
        for vm_id in list(self._cache):
            if vm_id not in vm_ids:
                del self._cache[vm_id]
        return {vm_id for vm_id in vm_ids if vm_id not in self._cache}

    async def next_version(self) -> int:
        self._version += 1
        return self._version


# Pictures not refreshed for this long are gone (the replica taking them stopped, nobody watched).
REDIS_TTL = 600
_KEY = "kvmvdi:thumb:{vm_id}"
_VERSION_KEY = "kvmvdi:thumb-version"


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


class RedisThumbnails:
    """Several replicas: one takes the pictures, every one serves them (hash: version, digest, png)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def get(self, vm_id: int) -> Thumbnail | None:
        raw = await self._redis.hgetall(_KEY.format(vm_id=vm_id))
        # Bytes in and out: the client does not decode responses (the PNG is binary).
        found = {_bytes(key): _bytes(value) for key, value in raw.items()}
        if not found:
            return None
        return Thumbnail(
            int(found[b"version"]), found[b"png"], found[b"digest"].decode(), float(found[b"taken_at"])
        )

    async def versions(self, vm_ids: Collection[int]) -> dict[int, int]:
        ids = list(vm_ids)
        if not ids:
            return {}
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for vm_id in ids:
                    pipe.hget(_KEY.format(vm_id=vm_id), "version")
                found = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("thumbnail versions unknown: %s", exc)
            return {}
        return {vm_id: int(version) for vm_id, version in zip(ids, found, strict=True) if version is not None}

    async def put(self, vm_id: int, thumbnail: Thumbnail) -> None:
        key = _KEY.format(vm_id=vm_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "version": thumbnail.version,
                    "png": thumbnail.png,
                    "digest": thumbnail.digest,
                    "taken_at": thumbnail.taken_at,
                },
            )
            pipe.expire(key, REDIS_TTL)
            await pipe.execute()

    async def retain(self, vm_ids: Collection[int]) -> set[int]:
        ids = list(vm_ids)
        if not ids:
            return set()
        async with self._redis.pipeline(transaction=False) as pipe:
            for vm_id in ids:
                pipe.expire(_KEY.format(vm_id=vm_id), REDIS_TTL)
            kept = await pipe.execute()
        # EXPIRE answers 0 for a key that is gone (Redis restarted, or the key expired).
        return {vm_id for vm_id, found in zip(ids, kept, strict=True) if not found}

    async def next_version(self) -> int:
        # Versions grow across replicas: a picture taken after a takeover never reuses a URL.
        return int(await self._redis.incr(_VERSION_KEY))


class Thumbnails:
    def __init__(
        self,
        ctx: VmContext,
        *,
        store: ThumbnailStore | None = None,
        watchers: Callable[[], int] | None = None,
    ) -> None:
        self.ctx = ctx
        self.store: ThumbnailStore = store or MemoryThumbnails()
        # Admin browsers watching, on any replica.
        self._watchers = watchers or (lambda: ctx.hub.admin_subscriber_count)
        self._digests: dict[int, str] = {}
        self.rounds = 0

    async def get(self, vm_id: int) -> Thumbnail | None:
        return await self.store.get(vm_id)

    async def version_of(self, vm_id: int) -> int | None:
        return (await self.store.versions([vm_id])).get(vm_id)

    async def versions(self, vm_ids: Collection[int]) -> dict[int, int]:
        return await self.store.versions(vm_ids)

    def _watched(self) -> bool:
        # Thumbnails are shown on admin pages only; client portals do not count.
        return self._watchers() > 0

    async def run(self) -> None:
        """The loop (a background duty): a round every ``thumbnail_interval`` while admins watch."""
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
        for vm_id in list(self._digests):
            if vm_id not in running_ids:
                del self._digests[vm_id]
        # A picture the store lost (Redis restarted) is taken again even if the screen did not change.
        for vm_id in await self.store.retain(running_ids):
            self._digests.pop(vm_id, None)
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
        previous = self._digests.get(vm.id)
        if previous is None:
            stored = await self.store.get(vm.id)
            previous = stored.digest if stored is not None else None
        if previous == digest:
            self._digests[vm.id] = digest
            return False
        version = await self.store.next_version()
        await self.store.put(vm.id, Thumbnail(version, png, digest, time.time()))
        self._digests[vm.id] = digest
        self.ctx.hub.publish(
            "vm", {"id": vm.id, "name": vm.name, "thumbnail": version, "change": "thumbnail"}
        )
        return True
