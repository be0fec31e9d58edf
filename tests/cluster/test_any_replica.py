"""Any replica serves anything: a console ticket from one works on another, an action on one
shows on the live pages of the others, revoking a console closes it wherever it is open,
and console limits and the Sessions page count the whole cluster."""

from __future__ import annotations

import asyncio
import ssl
import time

import httpx
import pytest

from tests.cluster.clients import (
    closed_code,
    console_socket,
    holders,
    live_socket,
    next_message,
)
from tests.cluster.desktops import ClusterDesktops, ready_desktop, release
from tests.cluster.lab import ClusterLab
from tests.cluster.waiting import until
from tests.dashboard import BrowserLikeClient
from tests.proxy.spice_client import connect_through_gateway, spice_link

pytestmark = [pytest.mark.cluster, pytest.mark.kvm]


async def test_a_ticket_from_one_replica_opens_consoles_on_the_others_and_an_end_of_session_closes_them(
    cluster: ClusterLab, cluster_desktops: ClusterDesktops
) -> None:
    r1, r2, r3 = cluster.replicas
    desktop = await ready_desktop(r1.url, cluster_desktops.users[0], cluster_desktops.pool_id)
    vm_id = desktop["desktop"]["vm_id"]
    ticket, password = desktop["connection"]["ticket"], desktop["connection"]["password"]
    connection = desktop["connection"]
    # Desktops serve SPICE over TLS only: through the gateway the TLS session runs between the
    # client and qemu, checked with the dashboard's CA.
    endpoint = f"{connection['host']}:{connection['tls_port']}"

    # The CONNECT gateway of r3 accepts the ticket r1 issued and reaches the display.
    answer, tcp = await asyncio.to_thread(
        connect_through_gateway, ("127.0.0.1", r3.gateway_port), endpoint, ticket=ticket
    )
    assert answer.status == 200, answer.head
    trust = ssl.create_default_context(cadata=connection["ca"])
    tls = await asyncio.to_thread(tcp.start_tls, trust, connection["host"])
    assert (await asyncio.to_thread(spice_link, tls, password)).ok
    tls.close()
    # So does r2's browser websocket; the console stays open there.
    stream = await asyncio.to_thread(console_socket, r2, vm_id, ticket)
    assert (await asyncio.to_thread(spice_link, stream, password)).ok
    try:
        admin = await cluster.admin(r3.url)
        # The Sessions page on r3 shows the browser console that r2 holds.
        await until(
            lambda: _shows_console(admin, "through replica r2"), "r3's Sessions page shows r2's console"
        )
        # An admin on r3 ends the session: the console on r2 closes within a second.
        page = (await admin.get("/sessions")).text
        lease_id = desktop["lease"]["id"]
        assert f'data-lease-id="{lease_id}"' in page
        response = await admin.post(f"/sessions/{lease_id}/end")
        answered = time.monotonic()
        assert response.status_code == 303
        code = await asyncio.to_thread(closed_code, stream, 5.0)
        assert code == 4410, code
        assert time.monotonic() - answered < 1.0
        await admin.aclose()
    finally:
        stream.close()


async def _shows_console(admin: BrowserLikeClient, text: str) -> bool:
    return text in (await admin.get("/sessions")).text


async def test_a_revocation_reaches_every_replica_even_while_redis_is_down(
    cluster: ClusterLab, cluster_desktops: ClusterDesktops
) -> None:
    """Without the bus, each replica still finds its revoked tickets in the database at its heartbeat."""
    r1, r2, r3 = cluster.replicas
    desktop = await ready_desktop(r3.url, cluster_desktops.users[1], cluster_desktops.pool_id)
    vm_id = desktop["desktop"]["vm_id"]
    stream = await asyncio.to_thread(console_socket, r2, vm_id, desktop["connection"]["ticket"])
    try:
        assert (await asyncio.to_thread(spice_link, stream, desktop["connection"]["password"])).ok
        admin = await cluster.admin(r1.url)
        cluster.redis.halt()
        response = await admin.post(f"/sessions/{desktop['lease']['id']}/end")
        answered = time.monotonic()
        assert response.status_code == 303
        assert await asyncio.to_thread(closed_code, stream, 5.0) == 4410
        # A heartbeat (0.5 s here) and a query: well within 1 s plus one heartbeat.
        assert time.monotonic() - answered < 1.5
        await admin.aclose()
    finally:
        stream.close()


async def test_an_admin_action_on_one_replica_shows_on_live_pages_of_the_others(cluster: ClusterLab) -> None:
    r1, r2, r3 = cluster.replicas
    admin = await cluster.admin(r1.url)
    hypervisor = f"/api/v1/admin/hypervisors/{cluster.hypervisor_id}"
    try:
        async with live_socket(r2, admin) as on_r2, live_socket(r3, admin) as on_r3:
            response = await admin.http.patch(
                hypervisor, json={"maintenance": True}, headers={"X-CSRF-Token": admin.csrf or ""}
            )
            assert response.status_code == 200, response.text
            for socket in (on_r2, on_r3):
                data = await next_message(
                    socket, "hypervisor", {"id": cluster.hypervisor_id, "maintenance": True}
                )
                assert data["id"] == cluster.hypervisor_id
    finally:
        await admin.http.patch(
            hypervisor, json={"maintenance": False}, headers={"X-CSRF-Token": admin.csrf or ""}
        )
        await admin.aclose()


async def test_console_limits_count_the_connections_of_every_replica(
    cluster: ClusterLab, cluster_desktops: ClusterDesktops
) -> None:
    """16 connections per user (the default): 8 on r1 and 8 on r2 leave none for r3."""
    r1, r2, r3 = cluster.replicas
    user = cluster_desktops.users[2]
    desktop = await ready_desktop(r1.url, user, cluster_desktops.pool_id)
    vm_id, ticket = desktop["desktop"]["vm_id"], desktop["connection"]["ticket"]
    streams = [await asyncio.to_thread(console_socket, r, vm_id, ticket) for r in [r1] * 8 + [r2] * 8]
    try:

        def refused_on_r3() -> bool:
            extra = console_socket(r3, vm_id, ticket)
            try:
                return closed_code(extra, 2.0) == 4429
            finally:
                extra.close()

        await until(lambda: asyncio.to_thread(refused_on_r3), "r3 refuses the 17th connection", within=15)
        streams.pop(0).close()

        def accepted_on_r3() -> bool:
            extra = console_socket(r3, vm_id, ticket)
            accepted = closed_code(extra, 1.0) is None
            if accepted:
                streams.append(extra)
            else:
                extra.close()
            return accepted

        await until(lambda: asyncio.to_thread(accepted_on_r3), "r3 accepts once one closed", within=15)
    finally:
        for stream in streams:
            stream.close()
        await release(r1.url, user, desktop["lease"]["id"])


async def test_thumbnails_are_taken_while_an_admin_watches_anywhere_and_served_by_every_replica(
    cluster: ClusterLab, cluster_desktops: ClusterDesktops
) -> None:
    """The duty holder takes pictures while an admin watches on another replica; every replica serves
    them; a picture Redis lost (a restart) is taken again though the screen did not change."""
    user = cluster_desktops.users[0]
    desktop = await ready_desktop(cluster.url, user, cluster_desktops.pool_id)
    vm_id = desktop["desktop"]["vm_id"]
    async with httpx.AsyncClient(timeout=5) as http:
        (holder,) = await until(lambda: holders(cluster, http), "a duty holder")
    watcher = next(r for r in cluster.replicas if r.name != holder)
    admin = await cluster.admin(watcher.url)

    async def shown() -> int | None:
        response = await admin.get(f"/api/v1/admin/vms/{vm_id}")
        version: int | None = response.json()["vm"]["thumbnail"]
        return version

    try:
        async with live_socket(watcher, admin) as socket:
            # An earlier test may have had the picture taken already: wait for one either way.
            first = await until(shown, "a thumbnail of the desktop", within=60)
            cluster.redis.cli("DEL", f"kvmvdi:thumb:{vm_id}")
            while True:
                data = await next_message(socket, "vm", {"id": vm_id, "change": "thumbnail"}, within=60)
                if data["thumbnail"] > first:
                    break
        version = data["thumbnail"]
        for replica in cluster.replicas:
            viewer = await cluster.admin(replica.url)
            picture = await viewer.get(f"/vms/{vm_id}/thumbnail.png?v={version}")
            await viewer.aclose()
            assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
            assert picture.content.startswith(b"\x89PNG")
    finally:
        await admin.aclose()
        await release(cluster.url, user, desktop["lease"]["id"])
