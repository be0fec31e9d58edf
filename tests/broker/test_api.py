"""The broker JSON API on a running dashboard: tokens, pools, refusals, leases."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import sqlalchemy as sa

from app.db.records import LeaseRecord, fetch_records
from app.db.schema import api_tokens, leases, pool_groups, pools
from tests.broker.records import (
    CLIENT_PASSWORD,
    add_client,
    add_connected_hypervisor,
    add_hypervisor,
    add_pool,
    add_vm,
    the_pool,
)
from tests.dashboard import RunningDashboard
from tests.rows import the_row


async def api_login(
    http: httpx.AsyncClient, username: str, password: str = CLIENT_PASSWORD, **extra: Any
) -> str:
    response = await http.post("/api/v1/login", json={"username": username, "password": password, **extra})
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_login_issues_a_hashed_short_lived_token_and_logout_revokes_it(
    dashboard: RunningDashboard,
) -> None:
    db = dashboard.services.db
    await add_client(db, "ann")
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as http:
        response = await http.post("/api/v1/login", json={"username": "ann", "password": CLIENT_PASSWORD})
        assert response.status_code == 200
        body = response.json()
        token = body["token"]
        assert body["user"] == {"username": "ann", "display_name": "", "source": "local"}
        assert len(token) >= 43  # 32 random bytes, base64url
        stored = await the_row(db, api_tokens.select())
        assert stored["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
        assert token not in stored["token_hash"]
        assert (await http.get("/api/v1/pools", headers=bearer(token))).status_code == 200
        assert (await http.post("/api/v1/logout", headers=bearer(token))).status_code == 204
        after = await http.get("/api/v1/pools", headers=bearer(token))
        assert after.status_code == 401 and after.json()["error"] == "invalid_token"


async def test_a_token_expires_by_the_dashboards_clock(dashboard: RunningDashboard) -> None:
    await add_client(dashboard.services.db, "old")
    ttl = dashboard.settings.security.api_token_ttl
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as http:
        token = await api_login(http, "old")
        dashboard.clock.advance(ttl - 60)
        assert (await http.get("/api/v1/pools", headers=bearer(token))).status_code == 200
        dashboard.clock.advance(61)
        response = await http.get("/api/v1/pools", headers=bearer(token))
        assert response.status_code == 401 and response.json()["error"] == "invalid_token"


async def test_wrong_credentials_are_401_and_repeated_failures_are_throttled(
    dashboard: RunningDashboard,
) -> None:
    await add_client(dashboard.services.db, "target")
    limit = dashboard.settings.security.login_max_failures
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as http:
        for _ in range(limit):
            response = await http.post(
                "/api/v1/login", json={"username": "target", "password": "wrong-password"}
            )
            assert response.status_code == 401 and response.json()["error"] == "invalid_credentials"
        blocked = await http.post("/api/v1/login", json={"username": "target", "password": CLIENT_PASSWORD})
        assert blocked.status_code == 429
        assert blocked.json()["error"] == "throttled"
        assert int(blocked.headers["Retry-After"]) > 0


async def test_bad_bodies_are_refused_naming_the_field(dashboard: RunningDashboard) -> None:
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as http:
        missing = await http.post("/api/v1/login", json={"username": "x"})
        assert missing.status_code == 400 and missing.json()["error"] == "invalid"
        assert set(missing.json()["fields"]) == {"password"}
        garbage = await http.post("/api/v1/login", content=b"{not json")
        assert garbage.status_code == 400 and garbage.json()["error"] == "invalid_json"
        realm = await http.post("/api/v1/login", json={"username": "x", "password": "y", "realm": "moon"})
        assert realm.status_code == 400 and "realm" in realm.json()["fields"]


async def test_admins_cannot_use_the_broker_api(dashboard: RunningDashboard) -> None:
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as http:
        response = await http.post(
            "/api/v1/login", json={"username": "admin", "password": dashboard.admin_password}
        )
        assert response.status_code == 401


async def test_pools_lists_only_allowed_pools_with_size_and_free(dashboard: RunningDashboard) -> None:
    db = dashboard.services.db
    hv = await add_hypervisor(db)
    user = await add_client(db, "pat")
    other = await add_client(db, "quinn")
    mine = await add_pool(db, "mine", [await add_vm(db, f"m{i}", hv) for i in range(3)], [user])
    await add_pool(db, "theirs", [await add_vm(db, "t0", hv)], [other])
    await db.execute(
        sa.update(pools)
        .where(pools.c.id == mine)
        .values(failover_kind="rdp", failover_host="rdp.example.org")
    )
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as http:
        token = await api_login(http, "pat")
        listed = (await http.get("/api/v1/pools", headers=bearer(token))).json()["pools"]
    assert [p["name"] for p in listed] == ["mine"]
    assert listed[0]["size"] == 3 and listed[0]["free"] == 3 and listed[0]["desktop"] is None
    assert listed[0]["failover"] == {"protocol": "rdp", "host": "rdp.example.org", "domain": ""}


async def test_desktop_refusals_are_explicit(dashboard: RunningDashboard) -> None:
    """not_allowed (403), no_free_desktop and maintenance (409, with failover), unknown pool (404)."""
    db = dashboard.services.db
    hv = await add_connected_hypervisor(dashboard.services.hypervisors, db)
    a, b = await add_client(db, "ava"), await add_client(db, "ben")
    full = await add_pool(db, "full", [await add_vm(db, "f0", hv, assigned_user_id=b)], [a, b])
    closed = await add_pool(
        db,
        "closed",
        [await add_vm(db, "c0", hv)],
        [a],
        maintenance=True,
        failover_kind="horizon",
        failover_host="horizon.example.org",
        failover_pool="Lab",
    )
    foreign = await add_pool(db, "foreign", [await add_vm(db, "x0", hv)], [b])
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as http:
        token = await api_login(http, "ava")
        r = await http.post(f"/api/v1/pools/{foreign}/desktop", headers=bearer(token))
        assert (r.status_code, r.json()["error"]) == (403, "not_allowed")
        r = await http.post(f"/api/v1/pools/{full}/desktop", headers=bearer(token))
        assert (r.status_code, r.json()["error"]) == (409, "no_free_desktop")
        assert "failover" not in r.json()
        r = await http.post(f"/api/v1/pools/{closed}/desktop", headers=bearer(token))
        assert (r.status_code, r.json()["error"]) == (409, "maintenance")
        assert r.json()["failover"] == {"protocol": "horizon", "server": "horizon.example.org", "pool": "Lab"}
        r = await http.post("/api/v1/pools/99999/desktop", headers=bearer(token))
        assert (r.status_code, r.json()["error"]) == (404, "pool_not_found")


async def test_all_hypervisors_down_offers_the_failover(dashboard: RunningDashboard) -> None:
    db = dashboard.services.db
    down = await add_hypervisor(db, "down", state="down")
    user = await add_client(db, "cy")
    with_failover = await add_pool(
        db,
        "rdp",
        [await add_vm(db, "r0", down)],
        [user],
        failover_kind="rdp",
        failover_host="ts.example.org",
        failover_domain="EXAMPLE",
    )
    without = await add_pool(db, "plain", [await add_vm(db, "p0", down)], [user])
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as http:
        token = await api_login(http, "cy")
        r = await http.post(f"/api/v1/pools/{with_failover}/desktop", headers=bearer(token))
        assert r.status_code == 200
        assert r.json() == {
            "status": "failover",
            "reason": "all_hypervisors_down",
            "failover": {"protocol": "rdp", "host": "ts.example.org", "domain": "EXAMPLE"},
        }
        r = await http.post(f"/api/v1/pools/{without}/desktop", headers=bearer(token))
        assert (r.status_code, r.json()["error"]) == (409, "all_hypervisors_down")


async def test_directory_group_grants_a_pool_through_the_token(dashboard: RunningDashboard) -> None:
    """Groups resolved at login travel with the token; a registered group maps to its pools."""
    from app.broker.tokens import issue_token
    from app.db.schema import directory_groups

    db = dashboard.services.db
    hv = await add_hypervisor(db)
    uid = await add_client(db, "dora", source="directory")
    pool_id = await add_pool(db, "staff", [await add_vm(db, "s0", hv)], [])
    group_id = await db.execute(directory_groups.insert().values(name="VDI-Staff"))
    await db.execute(pool_groups.insert().values(pool_id=pool_id, group_id=group_id))
    with_group, _ = await issue_token(db, uid, groups=("vdi-staff",), ttl=60, now=dashboard.clock.now())
    without_group, _ = await issue_token(db, uid, groups=("others",), ttl=60, now=dashboard.clock.now())
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as http:
        assert [
            p["name"] for p in (await http.get("/api/v1/pools", headers=bearer(with_group))).json()["pools"]
        ] == ["staff"]
        assert (await http.get("/api/v1/pools", headers=bearer(without_group))).json()["pools"] == []


async def test_heartbeat_and_release_of_leases(dashboard: RunningDashboard) -> None:
    """A lease is extended by its owner only, released with 204, then answers 410 lease_ended."""
    db = dashboard.services.db
    hv = await add_hypervisor(db)
    a, b = await add_client(db, "eve"), await add_client(db, "fay")
    pool = await the_pool(db, await add_pool(db, "p", [await add_vm(db, "e0", hv)], [a, b]))
    claim = await dashboard.services.broker.allocator.claim(pool, a)
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as http:
        ta, tb = await api_login(http, "eve"), await api_login(http, "fay")
        r = await http.post(f"/api/v1/leases/{claim.lease_id}/heartbeat", headers=bearer(ta))
        assert r.status_code == 200 and r.json()["expires_at"].endswith("Z")
        r = await http.post(f"/api/v1/leases/{claim.lease_id}/heartbeat", headers=bearer(tb))
        assert (r.status_code, r.json()["error"]) == (404, "lease_not_found")
        assert (
            await http.post(f"/api/v1/leases/{claim.lease_id}/release", headers=bearer(tb))
        ).status_code == 404
        assert (
            await http.post(f"/api/v1/leases/{claim.lease_id}/release", headers=bearer(ta))
        ).status_code == 204
        r = await http.post(f"/api/v1/leases/{claim.lease_id}/heartbeat", headers=bearer(ta))
        assert (r.status_code, r.json()["error"]) == (410, "lease_ended")


async def test_power_on_someone_elses_desktop_is_refused(dashboard: RunningDashboard) -> None:
    db = dashboard.services.db
    hv = await add_hypervisor(db)
    a, b = await add_client(db, "gus"), await add_client(db, "hal")
    vm = await add_vm(db, "g0", hv, assigned_user_id=a)
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as http:
        tb = await api_login(http, "hal")
        r = await http.post(f"/api/v1/desktops/{vm}/power", json={"action": "poweroff"}, headers=bearer(tb))
        assert (r.status_code, r.json()["error"]) == (403, "not_your_desktop")
        r = await http.post(f"/api/v1/desktops/{vm}/power", json={"action": "explode"}, headers=bearer(tb))
        assert (r.status_code, r.json()["error"]) == (400, "invalid") and "action" in r.json()["fields"]
    assert b


async def test_api_without_token_needs_no_csrf_and_gets_401(dashboard: RunningDashboard) -> None:
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as http:
        r = await http.post("/api/v1/pools/1/desktop", headers=bearer("not-a-real-token"))
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_desktop_whose_console_cannot_be_opened_is_not_left_held(dashboard: RunningDashboard) -> None:
    """test:///default's running domain "test" has no SPICE display: the hand-out fails at the
    console, and the lease it had just made ends with it instead of holding the desktop until
    the lease runs out (the client got no lease to heartbeat or release)."""
    db = dashboard.services.db
    hv = await add_connected_hypervisor(dashboard.services.hypervisors, db)
    vm = await add_vm(db, "test", hv, state="running")
    user = await add_client(db, "noscreen")
    pool = await add_pool(db, "no screens", [vm], [user])
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=60) as http:
        token = await api_login(http, "noscreen")
        r = await http.post(f"/api/v1/pools/{pool}/desktop", headers=bearer(token))
        assert r.status_code == 503 and r.json()["error"] == "console_unavailable", r.text
        held = await fetch_records(db, LeaseRecord, sa.select(leases).where(leases.c.vm_id == vm))
        assert [(row.ended_at is not None, row.end_reason) for row in held] == [(True, "console_failed")]
        # The next request is a fresh hand-out of the same free desktop, failing the same way.
        again = await http.post(f"/api/v1/pools/{pool}/desktop", headers=bearer(token))
        assert again.status_code == 503 and again.json()["error"] == "console_unavailable", again.text
