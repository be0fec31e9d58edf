"""Fixtures for the VM tests: the VM service wired to real harness hypervisors.

``vm_world`` gives a :class:`VmWorld` on a fresh database with hypervisor h0
(and ``vm_world2`` with h0 + h1 in its network namespace). ``vm_dashboard``
gives a running dashboard whose VM service drives h0. Every domain and file a
test creates carries the test's tag and is removed at teardown.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from databases import Database

from app import db as database
from app.audit import AuditLog
from app.db.schema import hypervisors
from app.live.hub import LiveHub
from app.settings import VmSettings
from app.vms.operations import OperationsRunner
from app.vms.service import VmService
from tests.dashboard import RunningDashboard
from tests.services.guests import GuestImages
from tests.services.libvirt_host import LibvirtHost
from tests.vms.local_hypervisor import LocalHypervisor, LocalRegistry

TEST_SETTINGS = VmSettings(
    populate_concurrency=4,
    power_concurrency=4,
    first_boot_timeout=60,
    shutdown_grace=10,
    thumbnail_interval=1.0,
)


@dataclass
class HostInWorld:
    id: int
    host: LibvirtHost
    iso_dir: Path

    @property
    def images_dir(self) -> Path:
        return self.host.images_dir

    @property
    def volatile_dir(self) -> Path:
        return self.host.volatile_dir


@dataclass
class VmWorld:
    service: VmService
    registry: LocalRegistry
    db: Database
    hub: LiveHub
    tag: str
    hosts: list[HostInWorld]
    guests: GuestImages
    _extra: list[Any] = field(default_factory=list)

    @property
    def h0(self) -> HostInWorld:
        return self.hosts[0]

    def name(self, suffix: str) -> str:
        return f"{self.tag}{suffix}"

    def install_guest(self, where: HostInWorld, disk: str, kind: str) -> None:
        """Replace the (empty) disk at ``disk`` with a standalone copy of guest ``kind``."""
        path = Path(disk)
        tmp = path.with_name(path.name + ".guest")
        subprocess.run(
            ["qemu-img", "convert", "-q", "-O", "qcow2", str(self.guests.base(kind)), str(tmp)], check=True
        )
        shutil.chown(tmp, where.host.ssh_user, "libvirt")
        tmp.chmod(0o664)
        os.replace(tmp, path)

    async def settle(self) -> None:
        await self.service.settle()


def _iso_dir(host: LibvirtHost) -> Path:
    iso_dir = host.dir / "iso"
    iso_dir.mkdir(exist_ok=True)
    for name in ("install-a.iso", "tools-b.iso"):
        (iso_dir / name).write_bytes(b"\0" * 2048)
    shutil.chown(iso_dir, host.ssh_user, "libvirt")
    return iso_dir


async def add_hypervisor(db: Database, host: LibvirtHost, name: str) -> tuple[int, Path]:
    iso_dir = _iso_dir(host)
    hv_id: int = await db.execute(
        hypervisors.insert().values(
            name=name,
            transport="ssh",
            address=host.spice_listen,
            ssh_port=host.ssh_port,
            ssh_user=host.ssh_user,
            images_dir=str(host.images_dir),
            volatile_dir=str(host.volatile_dir),
            iso_dir=str(iso_dir),
            state="up",
        )
    )
    return hv_id, iso_dir


def clean_host(host: LibvirtHost, tag: str) -> None:
    for name in host.domain_names():
        if name.startswith(tag):
            host.virsh("destroy", name, check=False)
            host.virsh("undefine", name, check=False)
    for directory in (host.images_dir, host.volatile_dir):
        for path in directory.iterdir():
            if path.name.lstrip(".").startswith(tag):
                path.unlink(missing_ok=True)


async def _world(database_url: str, hosts: list[LibvirtHost], guests: GuestImages) -> AsyncIterator[VmWorld]:
    tag = "t" + uuid.uuid4().hex[:6] + "-"
    await asyncio.to_thread(database.upgrade, database_url)
    db = database.connect_database(database_url)
    await db.connect()
    hub = LiveHub()
    registry = LocalRegistry()
    in_world: list[HostInWorld] = []
    for index, host in enumerate(hosts):
        hv_id, iso_dir = await add_hypervisor(db, host, f"h{index}")
        in_world.append(HostInWorld(hv_id, host, iso_dir))
    operations = OperationsRunner(db, hub)
    service = VmService(
        db=db, hub=hub, audit=AuditLog(db), registry=registry, operations=operations, settings=TEST_SETTINGS
    )
    await service.start()
    for entry in in_world:
        await registry.attach(LocalHypervisor(entry.id, entry.host, str(entry.iso_dir)))
    world = VmWorld(service, registry, db, hub, tag, in_world, guests)
    await world.settle()
    try:
        yield world
    finally:
        await service.stop()
        await registry.close()
        hub.close()
        await db.disconnect()
        for entry in in_world:
            await asyncio.to_thread(clean_host, entry.host, tag)


@pytest.fixture
async def vm_world(
    database_url: str, hypervisor_host: LibvirtHost, guest_images: GuestImages
) -> AsyncIterator[VmWorld]:
    async for world in _world(database_url, [hypervisor_host], guest_images):
        yield world


@pytest.fixture
async def vm_world2(
    database_url: str,
    hypervisor_host: LibvirtHost,
    second_hypervisor: LibvirtHost,
    guest_images: GuestImages,
) -> AsyncIterator[VmWorld]:
    async for world in _world(database_url, [hypervisor_host, second_hypervisor], guest_images):
        yield world


@dataclass
class DashboardWorld:
    dashboard: RunningDashboard
    world: VmWorld


async def attach_vm_service(
    dashboard: RunningDashboard, host: LibvirtHost, guests: GuestImages, settings: VmSettings = TEST_SETTINGS
) -> VmWorld:
    """Give a running dashboard a VM service driving ``host`` (its lifespan has no registry here)."""
    services = dashboard.services
    tag = "t" + uuid.uuid4().hex[:6] + "-"
    hv_id, iso_dir = await add_hypervisor(services.db, host, "h0")
    registry = LocalRegistry()
    assert services.operations is not None
    service = VmService(
        db=services.db,
        hub=services.hub,
        audit=services.audit,
        registry=registry,
        operations=services.operations,
        settings=settings,
    )
    await service.start()
    await registry.attach(LocalHypervisor(hv_id, host, str(iso_dir)))
    services.vms = service
    world = VmWorld(
        service, registry, services.db, services.hub, tag, [HostInWorld(hv_id, host, iso_dir)], guests
    )
    await world.settle()
    return world


async def detach_vm_service(dashboard: RunningDashboard, world: VmWorld) -> None:
    await world.service.stop()
    await world.registry.close()
    dashboard.services.vms = None
    for entry in world.hosts:
        await asyncio.to_thread(clean_host, entry.host, world.tag)


@pytest.fixture
async def vm_dashboard(
    dashboard: RunningDashboard, hypervisor_host: LibvirtHost, guest_images: GuestImages
) -> AsyncIterator[DashboardWorld]:
    world = await attach_vm_service(dashboard, hypervisor_host, guest_images)
    try:
        yield DashboardWorld(dashboard, world)
    finally:
        await detach_vm_service(dashboard, world)
