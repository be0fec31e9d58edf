"""Admin pages for users, directory groups, pools and sessions, through a logged-in admin client."""

from __future__ import annotations

import re

from app.broker.pools import get_pool
from app.db.records import LeaseRecord, PoolRecord, UserRecord
from app.db.schema import (
    audit_log,
    directory_groups,
    leases,
    pool_groups,
    pool_users,
    pool_vms,
    pools,
    users,
    vms,
)
from app.vms.records import Vm
from tests.broker.records import add_client, add_hypervisor, add_pool, add_vm, the_pool
from tests.dashboard import RunningDashboard
from tests.rows import the_record


async def test_admin_creates_a_portal_user_who_can_then_log_in(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    page = await admin.post("/users", {"username": "newbie", "role": "client", "display_name": "New B"})
    assert page.status_code == 200
    password = re.search(r'id="generated-password">([^<]+)<', page.text)
    assert password is not None
    portal = dashboard.client()
    await portal.refresh_csrf("/client/login")
    assert (
        await portal.post("/client/login", {"username": "newbie", "password": password.group(1)})
    ).status_code == 303
    duplicate = await admin.post("/users", {"username": "newbie", "role": "client"})
    assert duplicate.status_code == 400 and "already exists" in duplicate.text


async def test_the_last_enabled_admin_cannot_be_disabled_or_deleted(dashboard: RunningDashboard) -> None:
    db = dashboard.services.db
    admin = await dashboard.admin()
    me = await the_record(db, UserRecord, users.select().where(users.c.username == "admin"))
    refused = await admin.post(f"/users/{me.id}/disabled", {"disabled": "1"})
    assert refused.status_code == 409 and "last enabled administrator" in refused.text
    assert (await admin.post(f"/users/{me.id}/delete")).status_code == 409
    created = await admin.post("/users", {"username": "second", "role": "admin"})
    assert created.status_code == 200
    second = await the_record(db, UserRecord, users.select().where(users.c.username == "second"))
    assert (await admin.post(f"/users/{second.id}/disabled", {"disabled": "1"})).status_code == 303
    assert (await the_record(db, UserRecord, users.select().where(users.c.id == second.id))).disabled


async def test_disable_reset_and_delete_a_portal_user(dashboard: RunningDashboard) -> None:
    db = dashboard.services.db
    uid = await add_client(db, "temp")
    admin = await dashboard.admin()
    assert (await admin.post(f"/users/{uid}/disabled", {"disabled": "1"})).status_code == 303
    reset = await admin.post(f"/users/{uid}/password")
    assert reset.status_code == 200 and 'id="generated-password"' in reset.text
    confirm = await admin.get(f"/users/{uid}/delete")
    assert "Delete temp" in confirm.text
    assert (await admin.post(f"/users/{uid}/delete")).status_code == 303
    assert await db.fetch_one(users.select().where(users.c.id == uid)) is None
    actions = {
        row["action"] for row in await db.fetch_all(audit_log.select().where(audit_log.c.target == "temp"))
    }
    assert {"user_disabled", "password_reset", "user_deleted"} <= actions


async def test_pool_lifecycle_through_the_pages(dashboard: RunningDashboard) -> None:
    """Create with defaults, bad field named, add VMs/users/groups, no VM in two pools, delete."""
    db = dashboard.services.db
    hv = await add_hypervisor(db)
    vdi = await add_vm(db, "vdi-1", hv, kind="vdi")
    simple = await add_vm(db, "simple-1", hv, kind="simple")
    golden = await add_vm(db, "golden", hv, kind="source")
    uid = await add_client(db, "member")
    group = await db.execute(directory_groups.insert().values(name="vdi-users"))
    admin = await dashboard.admin()

    bad = await admin.post("/pools", {"name": "Lab", "lease_timeout_min": "soon"})
    assert bad.status_code == 400 and "Enter a whole number" in bad.text
    created = await admin.post("/pools", {"name": "Lab", "reset_on_handout": "1"})
    assert created.status_code == 303
    pool = await the_record(db, PoolRecord, pools.select().where(pools.c.name == "Lab"))
    assert (pool.lease_timeout_min, pool.max_per_user, pool.keep_ready, pool.failover_kind) == (
        5,
        1,
        0,
        "none",
    )
    horizon = await admin.post(
        f"/pools/{pool.id}", {"name": "Lab", "failover_kind": "horizon", "failover_host": "h"}
    )
    assert horizon.status_code == 400 and "Horizon pool name" in horizon.text

    assert (await admin.post(f"/pools/{pool.id}/vms", {"vm_id": [str(vdi), str(simple)]})).status_code == 303
    refused = await admin.post(f"/pools/{pool.id}/vms", {"vm_id": str(golden)})
    assert refused.status_code == 409 and "golden" in refused.text
    other = await admin.post("/pools", {"name": "Other"})
    other_id = int(other.headers["location"].split("/")[2].split("?")[0])
    twice = await admin.post(f"/pools/{other_id}/vms", {"vm_id": str(vdi)})
    assert twice.status_code == 409 and "vdi-1" in twice.text
    assert (
        await admin.post(f"/pools/{pool.id}/members", {"user_id": str(uid), "group_id": str(group)})
    ).status_code == 303
    vms_of = await db.fetch_all(pool_vms.select().where(pool_vms.c.pool_id == pool.id))
    assert {r["vm_id"] for r in vms_of} == {vdi, simple}
    users_of = await db.fetch_all(pool_users.select().where(pool_users.c.pool_id == pool.id))
    assert [r["user_id"] for r in users_of] == [uid]
    groups_of = await db.fetch_all(pool_groups.select().where(pool_groups.c.pool_id == pool.id))
    assert [r["group_id"] for r in groups_of] == [group]

    confirm = await admin.get(f"/pools/{pool.id}/delete")
    assert "vdi-1" in confirm.text and "simple-1" in confirm.text
    assert (await admin.post(f"/pools/{pool.id}/delete")).status_code == 303
    assert await get_pool(db, pool.id) is None
    assert await db.fetch_one(vms.select().where(vms.c.id == vdi)) is not None


async def test_admin_ends_a_session_and_the_desktop_returns(dashboard: RunningDashboard) -> None:
    db = dashboard.services.db
    hv = await add_hypervisor(db)
    uid = await add_client(db, "holder")
    vm = await add_vm(db, "held", hv)
    pool = await the_pool(db, await add_pool(db, "p", [vm], [uid], reset_on_handout=False))
    claim = await dashboard.services.broker.allocator.claim(pool, uid, client_address="10.1.2.3")
    admin = await dashboard.admin()
    listing = await admin.get("/sessions")
    assert "holder" in listing.text and "held" in listing.text and "10.1.2.3" in listing.text
    assert (await admin.post(f"/sessions/{claim.lease_id}/end")).status_code == 303
    lease = await the_record(db, LeaseRecord, leases.select().where(leases.c.id == claim.lease_id))
    assert lease.ended_at is not None and lease.end_reason == "ended_by_admin"
    assert (await the_record(db, Vm, vms.select().where(vms.c.id == vm))).assigned_user_id is None
    audit = await db.fetch_one(audit_log.select().where(audit_log.c.action == "lease_ended_by_admin"))
    assert audit is not None and audit["actor"] == "admin"
    assert "Nobody holds a desktop" in (await admin.get("/sessions")).text


async def test_motd_is_edited_on_the_pools_page(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    assert (await admin.post("/pools/motd", {"motd": "Welcome to the lab"})).status_code == 303
    assert "Welcome to the lab" in (await dashboard.client().get("/client/login")).text
