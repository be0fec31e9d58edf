"""Straight to the desktop after log-in: which pool the dashboard names, where it says so,
and how admins turn it on (per pool and for every pool)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import sqlalchemy as sa

from app.broker.catalog import straight_target
from app.db.schema import audit_log, pools, vms
from tests.broker.records import CLIENT_PASSWORD, add_client, add_hypervisor, add_pool, add_vm, the_pool
from tests.dashboard import RunningDashboard


def tile(
    pool_id: int, *, straight: bool = True, held: bool = False, maintenance: bool = False
) -> dict[str, Any]:
    desktop = {"vm_id": 10 + pool_id, "name": f"d{pool_id}", "state": "running"} if held else None
    return {"id": pool_id, "straight_to_desktop": straight, "maintenance": maintenance, "desktop": desktop}


def test_the_rule_one_pool_or_one_held_desktop_where_the_pool_says_so() -> None:
    assert straight_target([tile(1)]) == 1
    assert straight_target([tile(1, straight=False)]) is None
    assert straight_target([tile(1, maintenance=True)]) is None
    assert straight_target([]) is None
    # Several pools: only a user holding exactly one desktop goes straight, to that one.
    assert straight_target([tile(1), tile(2)]) is None
    assert straight_target([tile(1), tile(2, held=True)]) == 2
    assert straight_target([tile(1), tile(2, held=True, straight=False)]) is None
    assert straight_target([tile(1, held=True), tile(2, held=True)]) is None


async def api_pools(dashboard: RunningDashboard, username: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as http:
        login = await http.post("/api/v1/login", json={"username": username, "password": CLIENT_PASSWORD})
        assert login.status_code == 200, login.text
        answer = await http.get("/api/v1/pools", headers={"Authorization": f"Bearer {login.json()['token']}"})
        assert answer.status_code == 200
        body: dict[str, Any] = answer.json()
        return body


async def test_the_broker_api_names_the_pool_to_open_at_once(dashboard: RunningDashboard) -> None:
    db = dashboard.services.db
    hv = await add_hypervisor(db)
    only, many = await add_client(db, "only"), await add_client(db, "many")
    office = await add_pool(
        db, "Office", [await add_vm(db, "o0", hv)], [only, many], straight_to_desktop=True
    )
    lab_vm = await add_vm(db, "l0", hv)
    lab = await add_pool(db, "Lab", [lab_vm], [many])

    answer = await api_pools(dashboard, "only")
    assert answer["straight_to"] == office
    assert [pool["straight_to_desktop"] for pool in answer["pools"]] == [True]
    # Two pools and no desktop held: the user chooses.
    assert (await api_pools(dashboard, "many"))["straight_to"] is None
    # Holding a desktop of Lab, which does not say so: still a choice ...
    await db.execute(sa.update(vms).where(vms.c.id == lab_vm).values(assigned_user_id=many))
    assert (await api_pools(dashboard, "many"))["straight_to"] is None
    # ... until the global setting sends every pool's users straight to their desktop.
    admin = await dashboard.admin()
    await admin.refresh_csrf("/pools")
    assert (await admin.post("/pools/straight", {"straight_to_desktop": "1"})).status_code == 303
    answer = await api_pools(dashboard, "many")
    assert answer["straight_to"] == lab
    assert all(pool["straight_to_desktop"] for pool in answer["pools"])
    # A pool in maintenance hands out nothing: its users see the tiles, which say why.
    await db.execute(sa.update(pools).where(pools.c.id == office).values(maintenance=True))
    assert (await api_pools(dashboard, "only"))["straight_to"] is None
    changed = await db.fetch_all(
        audit_log.select().where(audit_log.c.action == "straight_to_desktop_changed")
    )
    assert [row["actor"] for row in changed] == ["admin"]


async def test_only_the_portal_page_right_after_log_in_goes_straight(dashboard: RunningDashboard) -> None:
    db = dashboard.services.db
    hv = await add_hypervisor(db)
    user = await add_client(db, "walt")
    pool_id = await add_pool(db, "Office", [await add_vm(db, "o0", hv)], [user], straight_to_desktop=True)
    portal = dashboard.client()
    await portal.refresh_csrf("/client/login")
    response = await portal.post("/client/login", {"username": "walt", "password": CLIENT_PASSWORD})
    assert response.status_code == 303 and response.headers["location"] == "/client?from=login"
    first = await portal.get("/client?from=login")
    assert f'id="straight" data-pool-id="{pool_id}"' in first.text
    assert "Show all pools instead" in first.text
    # The tiles themselves (a reload, the way back from the console) never send the user off.
    tiles = await portal.get("/client")
    assert 'id="straight"' not in tiles.text and f'data-pool-id="{pool_id}"' in tiles.text
    listed = (await portal.get("/client/pools.json")).json()
    assert listed["straight_to"] == pool_id


async def test_the_pool_page_turns_it_on_and_off(dashboard: RunningDashboard) -> None:
    db = dashboard.services.db
    pool_id = await add_pool(db, "Office", [], [])
    admin = await dashboard.admin()
    await admin.refresh_csrf(f"/pools/{pool_id}")
    page = await admin.get(f"/pools/{pool_id}")
    assert 'id="straight_to_desktop"' in page.text
    saved = await admin.post(f"/pools/{pool_id}", {"name": "Office", "straight_to_desktop": "1"})
    assert saved.status_code == 303
    assert (await the_pool(db, pool_id)).straight_to_desktop
    updated = await db.fetch_one(audit_log.select().where(audit_log.c.action == "pool_updated"))
    assert updated is not None and json.loads(updated["details_json"])["straight_to_desktop"] is True
    assert (await admin.post(f"/pools/{pool_id}", {"name": "Office"})).status_code == 303
    assert not (await the_pool(db, pool_id)).straight_to_desktop
