"""Desktops for the cluster tests: banner guests on h0 in one pool, client users, broker calls."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import libvirt

from app import db as database
from app.clock import utcnow
from app.db.schema import vms
from tests.broker.records import CLIENT_PASSWORD, add_client, add_pool
from tests.cluster.lab import ClusterLab
from tests.cluster.waiting import until
from tests.services import guests
from tests.services.guests import GuestImages
from tests.services.libvirt_host import LibvirtHost

COUNT = 4
USERS = 8
PREFIX = "cl-desk"


@dataclass
class ClusterDesktops:
    lab: ClusterLab
    host: LibvirtHost
    pool_id: int = 0
    vm_ids: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    disks: list[Path] = field(default_factory=list)

    async def create(self, guest_images: GuestImages) -> ClusterDesktops:
        assert self.lab.hypervisor_id is not None
        db = database.connect_database(self.lab.database_url)
        await db.connect()
        try:
            for index in range(1, COUNT + 1):
                name = f"{PREFIX}-{index}"
                disk = guest_images.overlay("banner", self.host.images_dir / f"{name}.qcow2")
                vm_id = int(
                    await db.execute(
                        vms.insert().values(
                            name=name,
                            hypervisor_id=self.lab.hypervisor_id,
                            kind="vdi",
                            disk_path=str(disk),
                            created_at=utcnow(),
                        )
                    )
                )
                self.names.append(name)
                self.vm_ids.append(vm_id)
                self.disks.append(disk)
            user_ids = [await add_client(db, f"cl-user-{index}") for index in range(1, USERS + 1)]
            self.users = [f"cl-user-{index}" for index in range(1, USERS + 1)]
            self.pool_id = await add_pool(
                db, "Cluster desktops", self.vm_ids, user_ids, reset_on_handout=False, lease_timeout_min=5
            )
        finally:
            await db.disconnect()
        await asyncio.to_thread(self._define)
        return self

    def _define(self) -> None:
        conn = libvirt.open(self.host.local_uri)
        try:
            for name, disk in zip(self.names, self.disks, strict=True):
                xml = guests.domain_xml(
                    name,
                    disk,
                    virt_type=guests.FAST_VIRT_TYPE,
                    spice_listen=self.host.spice_listen,
                    spice_password="initial-never-valid",
                )
                # As the VM layer defines desktops: no console accepted before the dashboard sets a
                # password, and SPICE over TLS only (certificates from the replicas' shared CA).
                xml = xml.replace("<graphics ", "<graphics passwdValidTo='1970-01-01T00:00:00' ", 1)
                conn.defineXML(xml.replace("defaultMode='insecure'", "defaultMode='secure'", 1))
        finally:
            conn.close()

    async def remove(self) -> None:
        for name in self.names:
            self.host.virsh("destroy", name, check=False)
            self.host.virsh("undefine", name, check=False)
        for disk in self.disks:
            disk.unlink(missing_ok=True)

    def vm_id(self, name: str) -> int:
        return self.vm_ids[self.names.index(name)]


async def api_login(http: httpx.AsyncClient, username: str) -> dict[str, str]:
    response = await http.post("/api/v1/login", json={"username": username, "password": CLIENT_PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


async def ready_desktop(base_url: str, username: str, pool_id: int, *, within: float = 90) -> dict[str, Any]:
    """Log in to the broker API at ``base_url`` and ask until the desktop is ready; the answer."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        headers = await api_login(http, username)

        async def ask() -> dict[str, Any] | None:
            response = await http.post(f"/api/v1/pools/{pool_id}/desktop", headers=headers)
            assert response.status_code in (200, 202), response.text
            body: dict[str, Any] = response.json()
            return body if body["status"] == "ready" else None

        return await until(ask, f"a ready desktop for {username}", within=within, every=0.5)


async def release(base_url: str, username: str, lease_id: int) -> None:
    """Give the desktop back (end of a test): the next test finds it free."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        headers = await api_login(http, username)
        response = await http.post(f"/api/v1/leases/{lease_id}/release", headers=headers)
        assert response.status_code in (204, 404, 410), response.text
