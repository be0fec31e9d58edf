"""The cluster every cluster test shares: started once for this package, healed around each test.

Package scope: after the last cluster test the replicas stop and their desktops leave hypervisor
h0, which later tests share (a VM world lists every domain it finds there).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.cluster.desktops import ClusterDesktops
from tests.cluster.lab import ClusterLab
from tests.services.galera import GaleraCluster
from tests.services.guests import GuestImages
from tests.services.libvirt_host import LibvirtHost
from tests.services.redis import RedisServer
from tests.services.rundir import RunDir


@pytest.fixture(scope="package")
def cluster_lab(
    run_dir: RunDir, galera: GaleraCluster, redis_server: RedisServer, hypervisor_host: LibvirtHost
) -> Iterator[ClusterLab]:
    """Three replicas (r1..r3) behind HAProxy on Galera + Redis, managing hypervisor h0."""
    lab = ClusterLab(run_dir, galera=galera, redis=redis_server, hypervisor=hypervisor_host)
    try:
        yield lab.start()
    finally:
        lab.stop()


@pytest.fixture
def cluster(cluster_lab: ClusterLab) -> Iterator[ClusterLab]:
    """The shared cluster, whole before and after the test (replicas, Galera nodes, Redis)."""
    cluster_lab.heal()
    yield cluster_lab
    cluster_lab.heal()


@pytest.fixture(scope="package")
async def cluster_desktops(
    cluster_lab: ClusterLab, hypervisor_host: LibvirtHost, guest_images: GuestImages
) -> AsyncIterator[ClusterDesktops]:
    """Banner desktops on h0 (TCG: they boot in a second) in one pool of the cluster, and its users."""
    desktops = ClusterDesktops(cluster_lab, hypervisor_host)
    try:
        yield await desktops.create(guest_images)
    finally:
        await desktops.remove()
