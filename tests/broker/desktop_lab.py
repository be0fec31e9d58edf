"""Desktops on a real hypervisor for the broker tests and bench/broker.py.

A :class:`DesktopLab` wraps a :class:`tests.vms.world.VmWorld` (a running dashboard
managing the harness host h0, and h1 when asked, over SSH with pinned host keys)
and adds what a broker scenario needs: pools of boot-sector desktops created
through the VM service, portal users, the broker API as a client sees it, and
ways to look at a desktop from outside (its libvirt domain id, its screen).
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa

from app.db.schema import leases
from app.vms.records import Vm, get_vm
from tests.broker.records import CLIENT_PASSWORD, add_client, add_pool
from tests.dashboard import BrowserLikeClient
from tests.proxy.spice_client import LinkResult, TcpStream, connect_through_gateway, spice_link
from tests.services import guests
from tests.services.libvirt_host import LibvirtHost
from tests.vms.world import HostInWorld, VmWorld
from tests.waiting import eventually

GENEROUS = 90
# Dashboard settings for these scenarios: a quick reaper, fencing within seconds of a lost hypervisor.
LAB_SETTINGS: dict[str, Any] = {"broker": {"reaper_interval": 0.5}, "hypervisors": {"fence_after": 2}}


@dataclass
class Desktop:
    """One answer of ``POST /api/v1/pools/{id}/desktop`` that said "ready"."""

    body: dict[str, Any]

    @property
    def vm_id(self) -> int:
        return int(self.body["desktop"]["vm_id"])

    @property
    def lease_id(self) -> int:
        return int(self.body["lease"]["id"])

    @property
    def connection(self) -> dict[str, Any]:
        connection: dict[str, Any] = self.body["connection"]
        return connection

    @property
    def ticket(self) -> str:
        return str(self.connection["ticket"])

    def gateway(self) -> tuple[str, int]:
        """The CONNECT gateway named by ``connection.proxy``."""
        proxy = urlsplit(self.connection["proxy"])
        assert proxy.username == "ticket" and proxy.password == self.ticket
        return proxy.hostname or "", proxy.port or 0

    def vv(self) -> dict[str, str]:
        parser = configparser.ConfigParser(interpolation=None)
        parser.read_string(self.connection["vv"])
        return dict(parser["virt-viewer"])

    @property
    def display(self) -> str:
        """The display's TLS port (desktops serve SPICE over TLS only)."""
        return f"{self.connection['host']}:{self.connection['tls_port']}"


class ApiClient:
    """A client of the broker API: one bearer token."""

    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self.http = http
        self.token = token

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def request(self, pool_id: int, *, new: bool = False) -> httpx.Response:
        """Ask for a desktop of the pool; ``new``: another one, besides those the user holds."""
        body = {"new": True} if new else None
        return await self.http.post(f"/api/v1/pools/{pool_id}/desktop", headers=self.headers, json=body)

    async def ready(
        self, pool_id: int, *, within: float = GENEROUS, new: bool = False
    ) -> tuple[list[str], Desktop]:
        """Ask until the answer is "ready"; the statuses seen on the way and the ready answer.

        ``new``: the first request asks for another desktop; the next ones wait for that one
        (the newest lease the user holds in the pool)."""
        seen: list[str] = []
        async with asyncio.timeout(within):
            while True:
                response = await self.request(pool_id, new=new and not seen)
                body = response.json()
                assert response.status_code in (200, 202), body
                seen.append(body["status"])
                if body["status"] == "ready":
                    return seen, Desktop(body)
                assert body["status"] == "booting", body
                assert int(response.headers["Retry-After"]) == body["retry_after"] > 0
                # As a client does: ask again when the broker's Retry-After says (its own pacing).
                await asyncio.sleep(body["retry_after"])

    async def release(self, lease_id: int) -> httpx.Response:
        return await self.http.post(f"/api/v1/leases/{lease_id}/release", headers=self.headers)


class DesktopLab:
    def __init__(self, world: VmWorld) -> None:
        self.world = world
        self.http = httpx.AsyncClient(base_url=world.dashboard.url, timeout=60)

    async def aclose(self) -> None:
        await self.http.aclose()

    @property
    def services(self) -> Any:
        return self.world.dashboard.services

    @property
    def db(self) -> Any:
        return self.world.db

    async def desktop_vm(
        self, suffix: str, guest: str = "banner", *, where: HostInWorld | None = None, volatile: bool = False
    ) -> Vm:
        """A stopped 64 MiB simple VM booting boot-sector guest ``guest``, created by the VM service."""
        host = where or self.world.h0
        created = await self.world.service.create(
            {"name": self.world.name(suffix), "hypervisor_id": host.id, "memory_mib": 64, "disk_size_gib": 1}
        )
        vm = await get_vm(self.db, created.vm_ids[0])
        assert vm is not None
        self.world.install_guest(host, vm.disk_path, guest)
        if volatile:
            await self.world.service.set_flags(vm.id, {"volatile": True})
        fresh = await get_vm(self.db, vm.id)
        assert fresh is not None
        return fresh

    async def pool(self, name: str, vm_list: list[Vm], user_ids: list[int], **settings: Any) -> int:
        return await add_pool(self.db, self.world.name(name), [vm.id for vm in vm_list], user_ids, **settings)

    async def client(self, name: str) -> tuple[int, ApiClient]:
        """A local portal user and an API client logged in as them."""
        user_id = await add_client(self.db, name)
        response = await self.http.post("/api/v1/login", json={"username": name, "password": CLIENT_PASSWORD})
        assert response.status_code == 200, response.text
        return user_id, ApiClient(self.http, response.json()["token"])

    async def portal(self, username: str) -> BrowserLikeClient:
        """A browser logged in to the client portal as ``username`` (a user made by :meth:`client`)."""
        client = self.world.dashboard.client()
        await client.refresh_csrf("/client/login")
        response = await client.post("/client/login", {"username": username, "password": CLIENT_PASSWORD})
        assert response.status_code == 303, response.text
        await client.refresh_csrf("/client")
        return client

    async def vm(self, vm_id: int) -> Vm:
        vm = await get_vm(self.db, vm_id)
        assert vm is not None
        return vm

    def host_of(self, vm: Vm) -> HostInWorld:
        return next(host for host in self.world.hosts if host.id == vm.hypervisor_id)

    def domain_id(self, vm: Vm) -> int:
        """libvirt's id of the running domain: a new QEMU process gets a new one."""
        return int(self.host_of(vm).host.virsh("domid", vm.name).strip())

    async def screen(self, vm: Vm) -> guests.Screen:
        hv = self.world.registry.get(vm.hypervisor_id)
        return guests.decode_image(await hv.screenshot_png(vm.name, max_width=720))

    async def settled_screen(self, vm: Vm, colour: tuple[int, int, int]) -> guests.Screen:
        """The guest's screen once ``colour`` dominates it and two looks in a row agree."""
        previous: list[guests.Screen | None] = [None]

        async def settled() -> guests.Screen | None:
            screen = await self.screen(vm)
            dominant = screen.fraction(colour) > 0.5
            steady = dominant and screen == previous[0]
            previous[0] = screen if dominant else None
            return screen if steady else None

        return await eventually(settled, f"{vm.name}'s screen settled on {colour}", timeout=GENEROUS)

    async def lease(self, lease_id: int) -> Any:
        return await self.db.fetch_one(leases.select().where(leases.c.id == lease_id))

    async def expire(self, lease_id: int) -> None:
        """Make the lease look abandoned: expired, no heartbeat for long."""
        past = datetime(2000, 1, 1)
        await self.db.execute(
            sa.update(leases).where(leases.c.id == lease_id).values(expires_at=past, last_heartbeat_at=past)
        )

    async def wait_lease_ended(self, lease_id: int) -> Any:
        async def ended() -> Any:
            lease = await self.lease(lease_id)
            return lease if lease.ended_at is not None else None

        return await eventually(ended, f"lease {lease_id} ended", timeout=GENEROUS)

    async def wait_vm_free(self, vm_id: int) -> Vm:
        """Until the desktop is back in its pool (its return, reset included, is complete)."""

        async def free() -> Vm | None:
            vm = await self.vm(vm_id)
            return vm if vm.assigned_user_id is None else None

        return await eventually(free, f"desktop {vm_id} back in its pool", timeout=GENEROUS)


def link_through_gateway(desktop: Desktop, *, ticket: str | None = None) -> tuple[LinkResult, TcpStream]:
    """A SPICE main-channel log-in through the CONNECT gateway with the answer's ticket and password.

    The stream stays open (a live console session) until the caller closes it.
    """
    answer, stream = connect_through_gateway(
        desktop.gateway(), desktop.display, ticket=ticket or desktop.ticket
    )
    assert answer.status == 200, answer.head
    # Through the gateway the TLS session runs between the client and qemu, checked with the CA.
    trust = ssl.create_default_context(cadata=desktop.connection["ca"])
    stream = stream.start_tls(trust, desktop.connection["host"])
    return spice_link(stream, desktop.connection["password"]), stream


@contextlib.contextmanager
def iso_dirs_kept(hosts: list[LibvirtHost]) -> Iterator[None]:
    """Remove the ISO images a VM world puts on the shared hosts: other tests list that directory."""
    before = {host: set((host.dir / "iso").glob("*")) for host in hosts}
    try:
        yield
    finally:
        for host, existing in before.items():
            for path in set((host.dir / "iso").glob("*")) - existing:
                if path.is_file():
                    path.unlink()
