"""Fixtures for the VM tests: a real dashboard whose hypervisors are the harness hosts over SSH.

``vm_world`` is a running dashboard (uvicorn, its own database, its lifespan's
registry and VM service) with hypervisor h0 registered through the admin API the
way an admin does it: the dashboard's key authorized on the host, the host key
fetched and pinned after comparing its fingerprint, the connection up.
``vm_world2`` adds h1, which lives in a network namespace of its own. Every
domain and file a test creates carries the test's tag and is removed at teardown.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from databases import Database

from app import db as database
from tests.dashboard import DashboardFactory
from tests.services.guests import GuestImages
from tests.services.libvirt_host import LibvirtHost
from tests.vms.world import (
    TEST_VM_SETTINGS,
    HostInWorld,
    VmWorld,
    WorldFactory,
    clean_host,
    register_hypervisor,
)


@pytest.fixture
async def world_factory(
    dashboard_factory: DashboardFactory, guest_images: GuestImages
) -> AsyncIterator[WorldFactory]:
    """``await world_factory([h0, h1], vms={...}, admin_password=...)``: a dashboard managing those hosts."""
    tag = "t" + uuid.uuid4().hex[:6] + "-"
    used: set[LibvirtHost] = set()
    worlds: list[VmWorld] = []

    async def factory(hosts: list[LibvirtHost], **overrides: Any) -> VmWorld:
        settings = {"vms": {**TEST_VM_SETTINGS, **overrides.pop("vms", {})}, **overrides}
        dashboard = await dashboard_factory(**settings)
        used.update(hosts)
        in_world: list[HostInWorld] = []
        if hosts:
            admin = await dashboard.admin()
            for index, host in enumerate(hosts):
                in_world.append(await register_hypervisor(dashboard, admin, host, f"h{index}"))
        world = VmWorld(dashboard, tag, in_world, guest_images)
        worlds.append(world)
        await world.settle()
        return world

    yield factory
    # Dashboards first, so that nothing reacts to the clean-up.
    for world in reversed(worlds):
        await world.dashboard.stop()
    for host in used:
        await asyncio.to_thread(clean_host, host, tag)


@pytest.fixture
async def vm_world(world_factory: WorldFactory, hypervisor_host: LibvirtHost) -> VmWorld:
    """A dashboard with h0 registered over SSH (pinned host key) and up."""
    return await world_factory([hypervisor_host])


@pytest.fixture
async def vm_world2(
    world_factory: WorldFactory, hypervisor_host: LibvirtHost, second_hypervisor: LibvirtHost
) -> VmWorld:
    """A dashboard with h0 and h1 (in its own network namespace) registered over SSH and up."""
    return await world_factory([hypervisor_host, second_hypervisor])


@pytest.fixture
async def outside_db(database_url: str) -> AsyncIterator[Database]:
    """The dashboards' database, seen from outside (it outlives a stopped dashboard)."""
    db = database.connect_database(database_url)
    await db.connect()
    yield db
    await db.disconnect()
