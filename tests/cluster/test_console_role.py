"""A console-only replica (``--role console``): consoles and health probes, never the background duties."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.cluster.clients import (
    console_socket,
    holders,
)
from tests.cluster.desktops import ClusterDesktops, ready_desktop, release
from tests.cluster.lab import ClusterLab
from tests.cluster.waiting import until
from tests.proxy.spice_client import spice_link

pytestmark = [pytest.mark.cluster, pytest.mark.kvm]


async def test_a_console_replica_serves_consoles_only_and_never_takes_the_duties(
    cluster: ClusterLab, cluster_desktops: ClusterDesktops
) -> None:
    r1, _r2, r3 = cluster.replicas
    r3.stop()
    r3.extra = {"cluster": {"role": "console"}}
    r3.start()
    try:
        await asyncio.to_thread(r3.wait_ready)
        async with httpx.AsyncClient(timeout=10) as http:
            health = (await http.get(f"{r3.url}/healthz")).json()
            assert health["replica"] == "r3" and health["duties"] is False
            # No pages, no API: only what a console needs.
            assert (await http.get(f"{r3.url}/login")).status_code == 404
            assert (await http.post(f"{r3.url}/api/v1/login", json={})).status_code == 404
            # A console granted by r1 opens on r3.
            user = cluster_desktops.users[6]
            desktop = await ready_desktop(r1.url, user, cluster_desktops.pool_id)
            stream = await asyncio.to_thread(
                console_socket, r3, desktop["desktop"]["vm_id"], desktop["connection"]["ticket"]
            )
            try:
                assert (await asyncio.to_thread(spice_link, stream, desktop["connection"]["password"])).ok
            finally:
                stream.close()
            await release(r1.url, user, desktop["lease"]["id"])
            # When the duty holder dies, the other full replica takes the duties, never r3.
            (holder,) = await until(lambda: holders(cluster, http), "a duty holder")
            cluster.replica(holder).kill()
            (successor,) = await until(lambda: holders(cluster, http), "a successor", within=30)
            assert successor in ("r1", "r2") and successor != holder
    finally:
        r3.stop()
        r3.extra = {}
        cluster.heal()
