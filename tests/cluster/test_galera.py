"""Allocation stays atomic on Galera with writes spread over every node: transactions that lose
certification run again, and no desktop ever goes to two users or a user past the limit."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
import sqlalchemy as sa
from databases import Database

from app import db as database
from app.broker import pools as pool_store
from app.broker.allocation import Allocator, Claim
from app.broker.transactions import WriteTransactions
from app.clock import SYSTEM_CLOCK
from app.db.schema import hypervisors, leases, pool_users, pool_vms, pools, users, vms
from tests.broker.records import add_client, add_hypervisor, add_pool, add_vm
from tests.cluster.lab import ClusterLab

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

DESKTOPS = 24
USERS = 30


async def test_desktop_requests_through_three_galera_nodes_never_share_a_desktop(cluster: ClusterLab) -> None:
    nodes = [database.connect_database(node.url, causal_reads=True) for node in cluster.galera.nodes]
    for db in nodes:
        await db.connect()
    first = nodes[0]
    hv_id = await add_hypervisor(first, "storm-hv")
    vm_ids = [await add_vm(first, f"storm-{i}", hv_id) for i in range(DESKTOPS)]
    user_ids = [await add_client(first, f"storm-user-{i}") for i in range(USERS)]
    pool_id = await add_pool(first, "Storm", vm_ids, user_ids, max_per_user=1)
    try:
        pool = await pool_store.get_pool(first, pool_id)
        assert pool is not None
        transactions = [WriteTransactions(db) for db in nodes]
        allocators = [Allocator(t, clock=SYSTEM_CLOCK) for t in transactions]
        # Every user asks twice at once, through two different nodes (two tabs on two replicas).
        requests = [
            allocators[(index + offset) % len(allocators)].claim(pool, user_id)
            for index, user_id in enumerate(user_ids)
            for offset in (0, 1)
        ]
        claims: list[Claim] = await asyncio.gather(*requests)
        active = await first.fetch_all(
            sa.select(leases.c.user_id, leases.c.vm_id).where(
                leases.c.pool_id == pool_id, leases.c.ended_at.is_(None)
            )
        )
        assigned = await first.fetch_all(
            sa.select(vms.c.id, vms.c.assigned_user_id).where(
                vms.c.id.in_(vm_ids), vms.c.assigned_user_id.is_not(None)
            )
        )
    finally:
        await _remove(first, pool_id, vm_ids, user_ids, hv_id)
        for db in nodes:
            await db.disconnect()
    # Each desktop has one holder at most, each user one desktop at most, and every desktop is used.
    assert max(Counter(row["vm_id"] for row in active).values()) == 1
    assert max(Counter(row["user_id"] for row in active).values()) == 1
    assert len(active) == DESKTOPS
    assert {(row["id"], row["assigned_user_id"]) for row in assigned} == {
        (row["vm_id"], row["user_id"]) for row in active
    }
    # A user's two requests got the same desktop (one new, one renewed), or both were refused.
    by_user: dict[int, set[int | None]] = {}
    for index, claim in enumerate(claims):
        by_user.setdefault(user_ids[index // 2], set()).add(claim.vm_id)
    assert all(len(got) == 1 for got in by_user.values())
    assert Counter(claim.refusal for claim in claims)["no_free_desktop"] == 2 * (USERS - DESKTOPS)
    # The nodes did conflict (certification failures), and those transactions ran again.
    assert sum(t.retries for t in transactions) > 0


async def _remove(db: Database, pool_id: int, vm_ids: list[int], user_ids: list[int], hv_id: int) -> None:
    await db.execute(leases.delete().where(leases.c.pool_id == pool_id))
    await db.execute(pool_vms.delete().where(pool_vms.c.pool_id == pool_id))
    await db.execute(pool_users.delete().where(pool_users.c.pool_id == pool_id))
    await db.execute(pools.delete().where(pools.c.id == pool_id))
    await db.execute(vms.delete().where(vms.c.id.in_(vm_ids)))
    await db.execute(users.delete().where(users.c.id.in_(user_ids)))
    await db.execute(hypervisors.delete().where(hypervisors.c.id == hv_id))
