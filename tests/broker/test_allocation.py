"""Desktop allocation on SQLite and MariaDB: atomic, explicit refusals, leases renewed and ended."""

from __future__ import annotations

import asyncio
from collections import Counter

import sqlalchemy as sa
from databases import Database

from app.broker.allocation import Allocator
from app.broker.transactions import WriteTransactions
from app.clock import SYSTEM_CLOCK
from app.db.schema import hypervisors, leases, pools, vms
from tests.broker.records import add_client, add_hypervisor, add_pool, add_vm, the_pool


async def test_100_simultaneous_requests_on_20_desktops_give_20_distinct_assignments(
    broker_db: Database,
) -> None:
    """No VM is ever given to two users: 20 assignments, 80 clean no_free_desktop refusals."""
    hv = await add_hypervisor(broker_db)
    vm_ids = [await add_vm(broker_db, f"desk{i:02}", hv, state="running") for i in range(20)]
    user_ids = [await add_client(broker_db, f"user{i:03}") for i in range(100)]
    pool = await the_pool(broker_db, await add_pool(broker_db, "rush", vm_ids, user_ids))
    allocator = Allocator(WriteTransactions(broker_db), clock=SYSTEM_CLOCK)

    claims = await asyncio.gather(
        *(allocator.claim(pool, uid, client_address="127.0.0.1") for uid in user_ids)
    )

    granted = [c for c in claims if c.ok]
    assert len(granted) == 20
    assert len({c.vm_id for c in granted}) == 20
    assert Counter(c.refusal for c in claims if not c.ok) == {"no_free_desktop": 80}
    rows = await broker_db.fetch_all(sa.select(vms.c.id, vms.c.assigned_user_id).where(vms.c.id.in_(vm_ids)))
    by_vm = {row["id"]: row["assigned_user_id"] for row in rows}
    assert {c.vm_id: uid for c, uid in zip(claims, user_ids, strict=True) if c.ok} == by_vm
    active = await broker_db.fetch_all(leases.select().where(leases.c.ended_at.is_(None)))
    assert len(active) == 20 and len({row["vm_id"] for row in active}) == 20


async def test_one_user_racing_with_many_requests_gets_one_desktop(broker_db: Database) -> None:
    """Two tabs or a script hammering the API: max_per_user holds, all answers name the same VM."""
    hv = await add_hypervisor(broker_db)
    vm_ids = [await add_vm(broker_db, f"d{i}", hv) for i in range(5)]
    uid = await add_client(broker_db, "eager")
    pool = await the_pool(broker_db, await add_pool(broker_db, "p", vm_ids, [uid]))
    allocator = Allocator(WriteTransactions(broker_db), clock=SYSTEM_CLOCK)
    claims = await asyncio.gather(*(allocator.claim(pool, uid) for _ in range(20)))
    assert {c.vm_id for c in claims} == {claims[0].vm_id}
    assert sum(not c.renewed for c in claims) == 1
    assert (
        await broker_db.fetch_val(
            sa.select(sa.func.count()).select_from(vms).where(vms.c.assigned_user_id == uid)
        )
        == 1
    )


async def test_returning_user_gets_the_same_desktop_and_a_renewed_lease(broker_db: Database) -> None:
    hv = await add_hypervisor(broker_db)
    vm_ids = [await add_vm(broker_db, f"d{i}", hv) for i in range(3)]
    uid = await add_client(broker_db, "back")
    pool = await the_pool(broker_db, await add_pool(broker_db, "p", vm_ids, [uid]))
    allocator = Allocator(WriteTransactions(broker_db), clock=SYSTEM_CLOCK)
    first = await allocator.claim(pool, uid)
    again = await allocator.claim(pool, uid)
    assert again.renewed and again.vm_id == first.vm_id and again.lease_id == first.lease_id


async def test_ineligible_desktops_are_never_handed_out(broker_db: Database) -> None:
    """Maintenance, locked, mid-operation, state unknown or missing, hypervisor down or in
    maintenance: all skipped."""
    up = await add_hypervisor(broker_db, "up")
    down = await add_hypervisor(broker_db, "down", state="down")
    hv_maint = await add_hypervisor(broker_db, "maint")
    await broker_db.execute(
        sa.update(hypervisors).where(hypervisors.c.id == hv_maint).values(maintenance=True)
    )
    blocked = [
        await add_vm(broker_db, "in-maintenance", up, maintenance=True),
        await add_vm(broker_db, "locked", up, locked=True),
        await add_vm(broker_db, "busy", up, operation_id=42),
        # Its hypervisor or the database was away: nobody knows what it runs.
        await add_vm(broker_db, "unknown", up, state="unknown"),
        await add_vm(broker_db, "missing", up, state="missing"),
        await add_vm(broker_db, "on-down", down),
        await add_vm(broker_db, "on-maint", hv_maint),
    ]
    good = await add_vm(broker_db, "good", up)
    users = [await add_client(broker_db, f"u{i}") for i in range(3)]
    pool = await the_pool(broker_db, await add_pool(broker_db, "p", [*blocked, good], users))
    allocator = Allocator(WriteTransactions(broker_db), clock=SYSTEM_CLOCK)
    first = await allocator.claim(pool, users[0])
    assert first.vm_id == good
    second = await allocator.claim(pool, users[1])
    assert second.refusal == "no_free_desktop"


async def test_refusal_reasons_are_explicit(broker_db: Database) -> None:
    down = await add_hypervisor(broker_db, "down", state="down")
    uid = await add_client(broker_db, "someone")
    vm = await add_vm(broker_db, "d", down)
    pool_id = await add_pool(broker_db, "p", [vm], [uid])
    allocator = Allocator(WriteTransactions(broker_db), clock=SYSTEM_CLOCK)
    pool = await the_pool(broker_db, pool_id)
    assert (await allocator.claim(pool, uid)).refusal == "all_hypervisors_down"
    await broker_db.execute(sa.update(pools).where(pools.c.id == pool_id).values(maintenance=True))
    assert (await allocator.claim(await the_pool(broker_db, pool_id), uid)).refusal == "maintenance"


async def test_ending_a_lease_frees_the_desktop_only_after_free_vm(broker_db: Database) -> None:
    """An ended lease keeps the VM out of reach until it is freed (after its reset)."""
    hv = await add_hypervisor(broker_db)
    vm = await add_vm(broker_db, "d", hv)
    a, b = await add_client(broker_db, "a"), await add_client(broker_db, "b")
    pool = await the_pool(broker_db, await add_pool(broker_db, "p", [vm], [a, b]))
    allocator = Allocator(WriteTransactions(broker_db), clock=SYSTEM_CLOCK)
    claim = await allocator.claim(pool, a)
    assert await allocator.end_lease(claim.lease_id or 0, reason="released") is not None
    assert await allocator.end_lease(claim.lease_id or 0, reason="released") is None
    assert (await allocator.claim(pool, b)).refusal == "no_free_desktop"
    await allocator.free_vm(vm, a, clean=False)
    handed = await allocator.claim(pool, b)
    assert handed.vm_id == vm and handed.previous_user_id == a


async def test_an_expired_lease_renewed_by_a_heartbeat_is_not_reaped(broker_db: Database) -> None:
    hv = await add_hypervisor(broker_db)
    vm = await add_vm(broker_db, "d", hv)
    a = await add_client(broker_db, "a")
    pool = await the_pool(broker_db, await add_pool(broker_db, "p", [vm], [a]))
    allocator = Allocator(WriteTransactions(broker_db), clock=SYSTEM_CLOCK)
    claim = await allocator.claim(pool, a)
    state, expires = await allocator.heartbeat(claim.lease_id or 0, a, 5)
    assert state == "ok" and expires is not None
    assert await allocator.end_lease(claim.lease_id or 0, reason="expired", only_if_expired=True) is None
    assert (await allocator.heartbeat(claim.lease_id or 0, a + 1000, 5))[0] == "not_found"
