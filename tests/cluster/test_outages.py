"""Outages of the shared services: a Galera node dies (service continues, leases survive),
Redis restarts (live pages reconnect and re-read their state, the bus works again)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.cluster.clients import (
    live_socket,
    next_message,
)
from tests.cluster.desktops import ClusterDesktops, api_login, ready_desktop, release
from tests.cluster.lab import ClusterLab
from tests.cluster.waiting import until

pytestmark = [pytest.mark.cluster, pytest.mark.kvm]


async def test_the_service_continues_when_a_galera_node_dies_and_the_lease_survives(
    cluster: ClusterLab, cluster_desktops: ClusterDesktops
) -> None:
    user = cluster_desktops.users[3]
    desktop = await ready_desktop(cluster.url, user, cluster_desktops.pool_id)
    lease_id = desktop["lease"]["id"]
    async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as http:
        headers = await api_login(http, user)
        # The node every replica writes to (HAProxy's first server) dies.
        writer = cluster.galera.nodes[0]
        writer.kill()
        killed = time.monotonic()

        failures: list[str] = []

        async def heartbeat_ok() -> bool:
            try:
                response = await http.post(f"/api/v1/leases/{lease_id}/heartbeat", headers=headers)
            except httpx.HTTPError as exc:
                failures.append(repr(exc))
                return False
            if response.status_code != 200:
                failures.append(f"{response.status_code} {response.text[:200]}")
            return response.status_code == 200

        await until(heartbeat_ok, "a heartbeat through another Galera node", within=60, every=0.2)
        recovered = time.monotonic() - killed
        # From then on, everything works: pages, the API, the same lease.
        failures.clear()
        for _ in range(10):
            assert await heartbeat_ok(), failures
            pools = await http.get("/api/v1/pools", headers=headers)
            assert pools.status_code == 200
            (mine,) = [p for p in pools.json()["pools"] if p["id"] == cluster_desktops.pool_id]
            assert mine["desktop"]["vm_id"] == desktop["desktop"]["vm_id"]
        again = await ready_desktop(cluster.url, user, cluster_desktops.pool_id)
        assert again["lease"]["id"] == lease_id
        await release(cluster.url, user, lease_id)
    assert cluster.galera.size(1) == 2
    print(f"service back {recovered:.1f} s after the writer node died")


async def test_live_pages_reconnect_and_resync_after_redis_restarts(cluster: ClusterLab) -> None:
    r1, r2, _r3 = cluster.replicas
    admin = await cluster.admin(r1.url)
    hypervisor = f"/api/v1/admin/hypervisors/{cluster.hypervisor_id}"
    try:
        async with live_socket(r1, admin) as socket:
            cluster.redis.restart()
            # The replica lost messages while Redis was away: its browsers are told to reconnect.
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(30):
                    while True:
                        await socket.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        await until(r1.ready, "r1 ready again")
        await until(r2.ready, "r2 ready again")
        # The page reconnects (and re-reads its state); messages from other replicas flow again.
        async with live_socket(r1, admin) as socket:
            on_r2 = await cluster.admin(r2.url)
            try:
                response = await on_r2.http.patch(
                    hypervisor, json={"maintenance": True}, headers={"X-CSRF-Token": on_r2.csrf or ""}
                )
                assert response.status_code == 200, response.text
                data = await next_message(
                    socket, "hypervisor", {"id": cluster.hypervisor_id, "event": "updated"}
                )
                assert data["name"]
            finally:
                await on_r2.http.patch(
                    hypervisor, json={"maintenance": False}, headers={"X-CSRF-Token": on_r2.csrf or ""}
                )
                await on_r2.aclose()
    finally:
        await admin.aclose()
