"""A dashboard managing the harness hypervisors, for the VM tests and bench/vdi.py.

:func:`register_hypervisor` adds a harness host the way an admin does it: the
dashboard's key authorized on the host, the hypervisor added through the admin
API, its host key fetched and pinned after comparing the fingerprint, and the
connection up. :class:`VmWorld` bundles the dashboard, its hosts and helpers.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from databases import Database

from app.hyper import Hypervisor, HypervisorRegistry
from app.hyper.sshkeys import fingerprint
from app.live.hub import LiveHub
from app.vms.records import get_vm
from app.vms.service import VmService
from tests.dashboard import BrowserLikeClient, RunningDashboard
from tests.services.guests import GuestImages
from tests.services.libvirt_host import LibvirtHost
from tests.waiting import eventually

# Small numbers so that waits and shutdowns happen within a test.
TEST_VM_SETTINGS: dict[str, Any] = {
    "populate_concurrency": 4,
    "power_concurrency": 4,
    "first_boot_timeout": 60,
    "shutdown_grace": 10,
    "thumbnail_interval": 0.5,
}
HYPERVISORS_API = "/api/v1/admin/hypervisors"
GENEROUS = 60


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
    dashboard: RunningDashboard
    tag: str
    hosts: list[HostInWorld]
    guests: GuestImages

    @property
    def service(self) -> VmService:
        service = self.dashboard.services.vms
        assert service is not None, "the dashboard's VM service is not running"
        return service

    @property
    def registry(self) -> HypervisorRegistry:
        return self.dashboard.services.hypervisors

    @property
    def db(self) -> Database:
        return self.dashboard.services.db

    @property
    def hub(self) -> LiveHub:
        return self.dashboard.services.hub

    @property
    def h0(self) -> HostInWorld:
        return self.hosts[0]

    def hv(self, where: HostInWorld | None = None) -> Hypervisor:
        return self.registry.get((where or self.h0).id)

    def name(self, suffix: str) -> str:
        return f"{self.tag}{suffix}"

    async def admin(self) -> BrowserLikeClient:
        return await self.dashboard.admin()

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

    async def wait_state(self, vm_id: int, state: str, timeout: float = GENEROUS) -> None:
        """Wait until the VM's domain is in ``state`` and the table says so."""
        vm = await get_vm(self.db, vm_id)
        assert vm is not None
        hv = self.registry.get(vm.hypervisor_id)
        reached = await self.service.ctx.states.wait_for(
            vm.hypervisor_id, vm.name, {state}, within=timeout, hv=hv
        )
        assert reached == state, f"{vm.name} did not become {state}"

        async def stored() -> bool:
            await self.settle()
            row = await get_vm(self.db, vm_id)
            return row is not None and row.state == state

        await eventually(stored, f"{vm.name} stored as {state}", timeout=timeout)
        # The event's handler may still be spawning its follow-ups (a volatile overlay's removal).
        await self.settle()


async def boot_once(world: VmWorld, vm_id: int, timeout: float = GENEROUS) -> None:
    """Start the VM and wait until its guest powered itself off and the stop was handled."""
    subscription = world.hub.subscribe(is_admin=True)
    try:
        await world.service.power(vm_id, "start")
        async with asyncio.timeout(timeout):
            while True:
                event = await subscription.next()
                assert event is not None, "the live hub dropped the test's subscription"
                data = event.data
                if event.topic == "vm" and data.get("id") == vm_id and data.get("state") == "shutoff":
                    break
    finally:
        subscription.close()
    await world.wait_state(vm_id, "shutoff", timeout)


def prepare_iso_dir(host: LibvirtHost) -> Path:
    """The host's ISO directory with two small images, owned by its service user."""
    iso_dir = host.dir / "iso"
    iso_dir.mkdir(exist_ok=True)
    shutil.chown(iso_dir, host.ssh_user, "libvirt")
    iso_dir.chmod(0o775)
    for name in ("install-a.iso", "tools-b.iso"):
        image = iso_dir / name
        if not image.exists():
            image.write_bytes(b"\0" * 2048)
            shutil.chown(image, host.ssh_user, "libvirt")
    return iso_dir


async def register_hypervisor(
    dashboard: RunningDashboard, admin: BrowserLikeClient, host: LibvirtHost, name: str
) -> HostInWorld:
    """Add ``host`` as an ``ssh`` hypervisor through the admin API, pin its host key, wait until up."""
    host.authorize(dashboard.services.ssh_key.authorized_keys_line)
    iso_dir = prepare_iso_dir(host)
    created = await admin.post(
        HYPERVISORS_API,
        json={
            "name": name,
            "transport": "ssh",
            "address": host.ssh_address,
            "ssh_port": host.ssh_port,
            "ssh_user": host.ssh_user,
            "images_dir": str(host.images_dir),
            "volatile_dir": str(host.volatile_dir),
            "iso_dir": str(iso_dir),
        },
    )
    assert created.status_code == 201, created.text
    hv_id = int(created.json()["id"])
    # The fingerprint an admin compares out of band: the host's own public key.
    pinned = await admin.post(
        f"{HYPERVISORS_API}/{hv_id}/host-key", json={"fingerprint": fingerprint(host.host_key_line())}
    )
    assert pinned.status_code == 200, pinned.text
    await dashboard.services.hypervisors.wait_for_state(hv_id, "up", GENEROUS)
    return HostInWorld(hv_id, host, iso_dir)


def clean_host(host: LibvirtHost, tag: str) -> None:
    for name in host.domain_names():
        if name.startswith(tag):
            host.virsh("destroy", name, check=False)
            # --nvram: a UEFI domain cannot be undefined with its variable store left behind;
            # --snapshots-metadata: nor one that has snapshots.
            host.virsh("undefine", "--nvram", "--snapshots-metadata", name, check=False)
    for directory in (host.images_dir, host.volatile_dir):
        for path in directory.iterdir():
            if path.name.lstrip(".").startswith(tag):
                # TPM states are directories.
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)


# ``await world_factory([h0, h1], vms={...}, hypervisors={...})`` (fixture in tests/vms/conftest.py).
WorldFactory = Callable[..., Awaitable[VmWorld]]
