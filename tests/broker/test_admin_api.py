"""Pools, accounts, directory groups and desktop sessions through the admin API with a personal
token: each does what its page does, under the page's rules, and is audited as the page is."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.db.schema import audit_log, directory_groups, vms
from app.vms.records import Vm
from tests.broker.records import add_client, add_hypervisor, add_pool, add_vm, the_pool
from tests.dashboard import RunningDashboard
from tests.rows import the_record
from tests.test_admin_tokens import bearer, make_token


@pytest.fixture
async def api(dashboard: RunningDashboard) -> AsyncIterator[httpx.AsyncClient]:
    """A script holding a full personal token of the test's administrator."""
    secret = await make_token(await dashboard.admin(), "automation")
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30, headers=bearer(secret)) as client:
        yield client


async def _audited(dashboard: RunningDashboard, target: str) -> list[tuple[str, Any]]:
    rows = await dashboard.services.db.fetch_all(
        audit_log.select().where(audit_log.c.target == target).order_by(audit_log.c.id)
    )
    return [(row["action"], row["actor"]) for row in rows]


async def test_pools_are_made_changed_filled_and_deleted_as_on_their_page(
    dashboard: RunningDashboard, api: httpx.AsyncClient
) -> None:
    db = dashboard.services.db
    hv = await add_hypervisor(db)
    vdi = await add_vm(db, "vdi-1", hv, kind="vdi")
    running = await add_vm(db, "simple-1", hv, kind="simple", state="running")
    golden = await add_vm(db, "golden", hv, kind="source")
    member = await add_client(db, "member")

    # The form's rules, each refused field named.
    bad = await api.post("/api/v1/admin/pools", json={"name": "Lab", "failover_kind": "rdp"})
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid"), bad.text
    assert "failover_host" in bad.json()["fields"]
    # (No reset on hand-out: the desktops' hypervisor is a record only.)
    made = await api.post(
        "/api/v1/admin/pools", json={"name": "Lab", "keep_ready": 2, "reset_on_handout": False}
    )
    assert made.status_code == 201, made.text
    pool = made.json()["pool"]
    assert (pool["name"], pool["keep_ready"], pool["lease_timeout_min"], pool["reset_on_handout"]) == (
        "Lab",
        2,
        5,
        False,
    )
    assert made.headers["location"] == f"/api/v1/admin/pools/{pool['id']}"
    taken = await api.post("/api/v1/admin/pools", json={"name": "lab"})
    assert taken.status_code == 400 and "already exists" in taken.json()["fields"]["name"]

    # Desktops: a golden image is refused by name, the others are added all the same.
    added = await api.post(f"/api/v1/admin/pools/{pool['id']}/vms", json={"vm_ids": [vdi, running, golden]})
    assert (added.status_code, added.json()["error"], added.json()["vms"]) == (409, "vms_refused", ["golden"])
    shown = (await api.get(f"/api/v1/admin/pools/{pool['id']}")).json()
    assert [vm["name"] for vm in shown["members"]["vms"]] == ["simple-1", "vdi-1"]
    assert shown["pool"]["size"] == 2

    # Only the fields sent change; a new device policy reaches the running desktop at its next start.
    changed = await api.patch(
        f"/api/v1/admin/pools/{pool['id']}", json={"clipboard": True, "usb_redirect": 2}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["policy_pending"] == ["simple-1"]
    assert (changed.json()["pool"]["keep_ready"], changed.json()["pool"]["usb_redirect"]) == (2, 2)
    stored = await the_record(db, Vm, vms.select().where(vms.c.id == vdi))
    assert (stored.clipboard, stored.usb_redirect) == (True, 2)

    members = await api.put(f"/api/v1/admin/pools/{pool['id']}/members", json={"user_ids": [member]})
    assert [user["username"] for user in members.json()["members"]["users"]] == ["member"]

    # While a desktop is held the pool cannot go, nor that desktop leave it.
    held = await the_pool(db, pool["id"])
    claim = await dashboard.services.broker.allocator.claim(held, member, client_address="10.1.2.3")
    plan = await api.get(f"/api/v1/admin/pools/{pool['id']}/delete-plan")
    assert plan.json()["in_use"] == 1 and len(plan.json()["members"]["vms"]) == 2
    refused = await api.delete(f"/api/v1/admin/pools/{pool['id']}")
    assert (refused.status_code, refused.json()["error"]) == (409, "pool_in_use")
    held_vm = (await the_record(db, Vm, vms.select().where(vms.c.assigned_user_id == member))).id
    busy = await api.delete(f"/api/v1/admin/pools/{pool['id']}/vms/{held_vm}")
    assert (busy.status_code, busy.json()["error"]) == (409, "desktop_in_use")

    # The session ends through the API too; then the pool goes and its VMs stay.
    listed = (await api.get("/api/v1/admin/sessions")).json()["sessions"]
    assert [(s["id"], s["username"], s["pool_name"], s["client_address"]) for s in listed] == [
        (claim.lease_id, "member", "Lab", "10.1.2.3")
    ]
    assert (await api.delete(f"/api/v1/admin/sessions/{claim.lease_id}")).status_code == 204
    assert (await api.delete(f"/api/v1/admin/sessions/{claim.lease_id}")).status_code == 404
    assert (await api.get("/api/v1/admin/sessions")).json()["sessions"] == []
    assert (await api.delete(f"/api/v1/admin/pools/{pool['id']}/vms/{held_vm}")).status_code == 204
    assert (await api.delete(f"/api/v1/admin/pools/{pool['id']}")).status_code == 204
    assert (await api.get(f"/api/v1/admin/pools/{pool['id']}")).status_code == 404
    assert await db.fetch_one(vms.select().where(vms.c.id == vdi)) is not None

    assert await _audited(dashboard, "Lab") == [
        ("pool_created", "admin"),
        ("pool_vms_added", "admin"),
        ("pool_updated", "admin"),
        ("pool_members_set", "admin"),
        ("pool_vm_removed", "admin"),
        ("pool_deleted", "admin"),
    ]
    ended = await db.fetch_one(audit_log.select().where(audit_log.c.action == "lease_ended_by_admin"))
    assert ended is not None and ended["actor"] == "admin"


async def test_accounts_are_made_disabled_reset_and_deleted_as_on_their_page(
    dashboard: RunningDashboard, api: httpx.AsyncClient
) -> None:
    made = await api.post("/api/v1/admin/users", json={"username": "newbie", "display_name": "New B"})
    assert made.status_code == 201, made.text
    user, password = made.json()["user"], made.json()["password"]
    assert (user["username"], user["role"], user["disabled"]) == ("newbie", "client", False)
    portal = dashboard.client()
    assert (await portal.login("newbie", password, path="/client/login")).status_code == 303
    again = await api.post("/api/v1/admin/users", json={"username": "newbie"})
    assert again.status_code == 400 and "already exists" in again.json()["message"]

    disabled = await api.patch(f"/api/v1/admin/users/{user['id']}", json={"disabled": True})
    assert disabled.status_code == 200 and disabled.json()["user"]["disabled"] is True
    assert (await portal.get("/client")).status_code == 303, "the disabled user's session ended"
    assert (await api.patch(f"/api/v1/admin/users/{user['id']}", json={"disabled": False})).status_code == 200
    reset = await api.post(f"/api/v1/admin/users/{user['id']}/password")
    assert reset.status_code == 200 and reset.json()["password"] not in (password, "")
    assert (await dashboard.client().login("newbie", password, path="/client/login")).status_code != 303

    # The last enabled administrator stays, as on the page.
    users = (await api.get("/api/v1/admin/users")).json()["users"]
    me = next(u for u in users if u["username"] == "admin")
    last = await api.patch(f"/api/v1/admin/users/{me['id']}", json={"disabled": True})
    assert (last.status_code, last.json()["error"]) == (409, "refused")
    assert "last enabled administrator" in last.json()["message"]
    assert (await api.delete(f"/api/v1/admin/users/{me['id']}")).status_code == 409

    assert (await api.delete(f"/api/v1/admin/users/{user['id']}")).status_code == 204
    assert (await api.get(f"/api/v1/admin/users/{user['id']}")).status_code == 404
    assert await _audited(dashboard, "newbie") == [
        ("user_created", "admin"),
        ("user_disabled", "admin"),
        ("user_enabled", "admin"),
        ("password_reset", "admin"),
        ("user_deleted", "admin"),
    ]
    entry = await dashboard.services.db.fetch_one(
        audit_log.select().where(audit_log.c.action == "user_created")
    )
    assert entry is not None and json.loads(entry["details_json"])["via_api_token"] == "automation"


async def test_directory_groups_are_registered_granted_pools_and_removed(
    dashboard: RunningDashboard, api: httpx.AsyncClient
) -> None:
    db = dashboard.services.db
    pool = await add_pool(db, "Staff", [], [])
    made = await api.post("/api/v1/admin/groups", json={"name": "vdi-staff", "description": "Staff"})
    assert made.status_code == 201, made.text
    group = made.json()["group"]
    assert (await api.post("/api/v1/admin/groups", json={"name": "VDI-staff"})).status_code == 400
    granted = await api.put(f"/api/v1/admin/pools/{pool}/members", json={"group_ids": [group["id"]]})
    assert [g["name"] for g in granted.json()["members"]["groups"]] == ["vdi-staff"]
    listed = (await api.get("/api/v1/admin/groups")).json()["groups"]
    assert [(g["name"], g["pool_ids"]) for g in listed] == [("vdi-staff", [pool])]

    # A read-only token reads, and changes nothing.
    reader = await make_token(await dashboard.admin(), "reader", read_only="on")
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30, headers=bearer(reader)) as script:
        assert (await script.get("/api/v1/admin/groups")).status_code == 200
        refused = await script.delete(f"/api/v1/admin/groups/{group['id']}")
        assert (refused.status_code, refused.json()["error"]) == (403, "read_only_token")

    assert (await api.delete(f"/api/v1/admin/groups/{group['id']}")).status_code == 204
    assert (await api.delete(f"/api/v1/admin/groups/{group['id']}")).status_code == 404
    assert await db.fetch_one(directory_groups.select()) is None
    assert (await api.get(f"/api/v1/admin/pools/{pool}")).json()["members"]["groups"] == []
    assert await _audited(dashboard, "vdi-staff") == [
        ("directory_group_added", "admin"),
        ("directory_group_removed", "admin"),
    ]


async def test_the_portals_settings_on_the_pools_page_are_set_through_the_api(
    dashboard: RunningDashboard, api: httpx.AsyncClient
) -> None:
    changed = await api.patch("/api/v1/admin/pools/portal", json={"motd": "  Welcome to the lab  "})
    assert changed.json() == {"motd": "Welcome to the lab", "straight_to_desktop": False}, changed.text
    assert "Welcome to the lab" in (await dashboard.client().get("/client/login")).text
    straight = await api.patch("/api/v1/admin/pools/portal", json={"straight_to_desktop": True})
    assert straight.json() == {"motd": "Welcome to the lab", "straight_to_desktop": True}
    assert (await api.get("/api/v1/admin/pools/portal")).json() == straight.json()
    too_long = await api.patch("/api/v1/admin/pools/portal", json={"motd": "x" * 2001})
    assert (too_long.status_code, list(too_long.json()["fields"])) == (400, ["motd"])
    actions = [
        row["action"]
        for row in await dashboard.services.db.fetch_all(
            audit_log.select().where(audit_log.c.action.in_(["motd_changed", "straight_to_desktop_changed"]))
        )
    ]
    assert actions == ["motd_changed", "straight_to_desktop_changed"]
