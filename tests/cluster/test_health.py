"""Health probes and the cluster's view of itself: every replica ready, one holds the duties."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys

import httpx
import pytest

from app import db as database
from app.cluster.duties import read_lease
from app.cluster.replicas import read_replicas
from tests.cluster.lab import ClusterLab
from tests.dashboard import REPO

pytestmark = [pytest.mark.cluster]


async def test_every_replica_is_alive_ready_and_seen_by_the_others(cluster: ClusterLab) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        for replica in cluster.replicas:
            health = await http.get(f"{replica.url}/healthz")
            assert health.status_code == 200 and health.json()["replica"] == replica.name
            ready = await http.get(f"{replica.url}/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"] == {"database": "ok", "redis": "ok", "draining": "no"}
        # Through HAProxy, requests reach every replica.
        seen = {(await http.get(f"{cluster.url}/healthz")).json()["replica"] for _ in range(12)}
        assert seen == {"r1", "r2", "r3"}
    db = database.connect_database(cluster.database_url)
    await db.connect()
    try:
        replicas = {r.name: r for r in await read_replicas(db, dead_after=3.0)}
        assert {name for name, r in replicas.items() if r.alive} == {"r1", "r2", "r3"}
        assert len({r.ssh_key_fingerprint for r in replicas.values()}) == 1
        assert len({r.ca_fingerprint for r in replicas.values()}) == 1
        lease = await read_lease(db)
        assert lease is not None and lease.holder in replicas and lease.expires_in > 0
    finally:
        await db.disconnect()


async def test_kvm_vdi_check_reports_the_replicas_the_duty_holder_redis_and_galera(
    cluster: ClusterLab,
) -> None:
    r1 = cluster.replicas[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVMVDI_")}
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app", "--config", str(r1.config_path), "check"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line.split("  ")[0]: line for line in result.stdout.splitlines() if "  " in line}
    assert " ok " in lines["cluster redis"] and cluster.redis.url in lines["cluster redis"]
    assert "3 alive: r1 (all" in lines["cluster replicas"]
    assert all(f"{name} (all" in lines["cluster replicas"] for name in ("r1", "r2", "r3"))
    holder = re.search(r"held by (r\d)", lines["cluster duties"])
    assert holder is not None and " ok " in lines["cluster duties"]
    assert "3 nodes, component Primary" in lines["galera"] and "is Synced" in lines["galera"]
    # The replicas' shared SSH key is the one h0 knows: it answers (warnings are about directories).
    assert "libvirt" in lines["hypervisor h0-cluster"] and "FAIL" not in lines["hypervisor h0-cluster"]
