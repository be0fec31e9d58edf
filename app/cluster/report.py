"""What ``kvm-vdi check`` says about the cluster: replicas, the duty holder, Redis, Galera.

Read-only, from any machine with the configuration: the replicas' heartbeat rows and the
duty lease in the database, a PING to Redis, and the Galera status of the database node
this connection reaches.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from databases import Database
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from app.cluster.duties import read_lease
from app.cluster.replicas import read_replicas
from app.settings import Settings, safe_redis_url

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass(frozen=True)
class ClusterLine:
    subject: str
    result: str
    detail: str


async def cluster_lines(settings: Settings, db: Database) -> list[ClusterLine]:
    cluster = settings.cluster
    if not cluster.enabled or cluster.redis_url is None:
        return [ClusterLine("cluster", OK, "one process (no cluster.redis_url): nothing shared to check")]
    return [
        await _redis_line(cluster.redis_url.get_secret_value()),
        *await _replica_lines(db, cluster.replica_timeout),
        await _galera_line(db),
    ]


async def _redis_line(url: str) -> ClusterLine:
    client = aioredis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        info = await asyncio.wait_for(client.info("server"), 5)
    except (RedisError, OSError, TimeoutError) as exc:
        return ClusterLine("cluster redis", FAIL, f"{safe_redis_url(url)}: {exc}")
    finally:
        await client.aclose()
    return ClusterLine("cluster redis", OK, f"{safe_redis_url(url)}, Redis {info.get('redis_version', '?')}")


async def _replica_lines(db: Database, dead_after: float) -> list[ClusterLine]:
    replicas = await read_replicas(db, dead_after=dead_after)
    alive = [r for r in replicas if r.alive]
    gone = [r for r in replicas if not r.alive]
    if alive:
        shown = ", ".join(
            f"{r.name} ({r.role}{', draining' if r.draining else ''}, {r.console_connections} console "
            f"connections, seen {r.seen_ago:.1f} s ago)"
            for r in alive
        )
        lines = [ClusterLine("cluster replicas", OK, f"{len(alive)} alive: {shown}")]
    else:
        lines = [ClusterLine("cluster replicas", FAIL, "no replica is running (no heartbeat)")]
    if gone:
        shown = ", ".join(f"{r.name} ({_ago(r.seen_ago)})" for r in gone)
        lines.append(ClusterLine("cluster replicas gone", WARN, shown))
    keys = {r.ssh_key_fingerprint for r in alive if r.ssh_key_fingerprint}
    if len(keys) > 1:
        lines.append(
            ClusterLine(
                "cluster ssh key",
                FAIL,
                "replicas use different SSH keys (copy data_dir/ssh/id_ed25519 of one to the others): "
                + ", ".join(f"{r.name} {r.ssh_key_fingerprint}" for r in alive),
            )
        )
    cas = {r.ca_fingerprint for r in alive if r.ca_fingerprint}
    if len(cas) > 1:
        lines.append(
            ClusterLine(
                "cluster console CA",
                FAIL,
                "replicas use different console CAs (copy data_dir/ca of one to the others, or point "
                "console.ca_dir at one shared directory): "
                + ", ".join(f"{r.name} {r.ca_fingerprint}" for r in alive),
            )
        )
    lease = await read_lease(db)
    if lease is None or lease.expires_in <= 0:
        holder = f" (last: {lease.holder})" if lease is not None else ""
        lines.append(ClusterLine("cluster duties", WARN if alive else FAIL, f"nobody holds them now{holder}"))
    else:
        lines.append(
            ClusterLine(
                "cluster duties",
                OK,
                f"held by {lease.holder} (lease epoch {lease.epoch}, expires in {lease.expires_in:.1f} s "
                "unless renewed)",
            )
        )
    return lines


async def _galera_line(db: Database) -> ClusterLine:
    rows: Any = await db.fetch_all("SHOW STATUS LIKE 'wsrep%'")
    status = {str(row[0]): str(row[1]) for row in rows}
    if status.get("wsrep_ready") is None or status.get("wsrep_cluster_size", "0") == "0":
        return ClusterLine("galera", WARN, "the database is one MariaDB server, not a Galera cluster")
    size = status.get("wsrep_cluster_size", "?")
    state = status.get("wsrep_cluster_status", "?")
    local = status.get("wsrep_local_state_comment", "?")
    node = await db.fetch_val("SELECT @@wsrep_node_name")
    detail = f"{size} nodes, component {state}, this connection's node {node} is {local}"
    healthy = state == "Primary" and local == "Synced" and status.get("wsrep_ready") == "ON"
    if not healthy:
        return ClusterLine("galera", FAIL, detail)
    return ClusterLine("galera", OK if size != "?" and int(size) >= 3 else WARN, detail)


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"
