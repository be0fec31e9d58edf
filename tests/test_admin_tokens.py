"""Personal API tokens: made and revoked on their page, shown once, stored hashed, optional
expiry, read-only scope, accepted on the admin API alone (no cookie, no CSRF token)."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import sqlalchemy as sa
from starlette.routing import Route

from app.auth.accounts import create_local_user
from app.broker.people import reset_password, set_disabled
from app.clock import utcnow
from app.db.schema import api_tokens, audit_log
from tests.client_session import client_user_session
from tests.dashboard import BrowserLikeClient, RunningDashboard

HYPERVISOR = {
    "name": "tok-demo",
    "transport": "test",
    "images_dir": "/i",
    "volatile_dir": "/v",
    "iso_dir": "/o",
}
_SECRET = re.compile(r'id="new-token-secret">(kvd_[A-Za-z0-9_-]+)<')


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def make_token(admin: BrowserLikeClient, name: str, **form: str) -> str:
    """Through the page, as an administrator does."""
    page = await admin.post("/account/tokens", {"name": name, "expires_in_days": "90", **form})
    assert page.status_code == 200, page.text
    found = _SECRET.search(page.text)
    assert found, "the secret is shown on the answer page"
    return found.group(1)


async def test_a_token_made_on_its_page_works_alone_and_is_shown_once(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    secret = await make_token(admin, "inventory script")
    listing = await admin.get("/account/tokens")
    assert "inventory script" in listing.text and secret not in listing.text, "shown once, never again"
    stored = await dashboard.services.db.fetch_one(
        api_tokens.select().where(api_tokens.c.name == "inventory script")
    )
    assert stored is not None and secret not in stored["token_hash"] and stored["kind"] == "personal"

    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as script:
        # No cookie and no CSRF token: the token alone, for reading and for changes.
        assert (await script.get("/api/v1/admin/hypervisors", headers=bearer(secret))).status_code == 200
        made = await script.post("/api/v1/admin/hypervisors", json=HYPERVISOR, headers=bearer(secret))
        assert made.status_code == 201, made.text
        assert "set-cookie" not in made.headers, "a token request gets no session"
    entry = await dashboard.services.db.fetch_one(
        audit_log.select().where(audit_log.c.action == "hypervisor_added")
    )
    assert entry is not None and entry["actor"] == "admin"


async def test_read_only_tokens_read_and_change_nothing(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    secret = await make_token(admin, "monitoring", read_only="on")
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as script:
        assert (await script.get("/api/v1/admin/vms", headers=bearer(secret))).status_code == 200
        refused = await script.post("/api/v1/admin/hypervisors", json=HYPERVISOR, headers=bearer(secret))
        assert (refused.status_code, refused.json()["error"]) == (403, "read_only_token")
        revoke_self = await script.delete("/api/v1/admin/tokens/1", headers=bearer(secret))
        assert revoke_self.status_code == 403
    assert (await admin.get("/api/v1/admin/hypervisors")).json()["hypervisors"] == []


async def test_every_admin_api_route_takes_a_token(dashboard: RunningDashboard) -> None:
    """A full token passes every admin API guard; a read-only one passes the reads only."""
    admin = await dashboard.admin()
    full, read_only = await make_token(admin, "full"), await make_token(admin, "reader", read_only="on")
    routes = [
        (method, re.sub(r"\{[^}]+\}", "999999", route.path))
        for route in dashboard.app.routes
        if isinstance(route, Route) and route.path.startswith("/api/v1/admin/")
        for method in sorted((route.methods or set()) - {"HEAD"})
    ]
    assert len(routes) >= 30
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as script:
        for method, path in routes:
            answer = await script.request(method, path, headers=bearer(full), json={})
            assert answer.status_code not in (401, 403), (method, path, answer.text)
            answer = await script.request(method, path, headers=bearer(read_only), json={})
            if method == "GET":
                assert answer.status_code not in (401, 403), (method, path, answer.text)
            else:
                assert (answer.status_code, answer.json()["error"]) == (403, "read_only_token"), (
                    method,
                    path,
                )


async def test_no_cookie_rides_along_with_a_bearer_header(dashboard: RunningDashboard) -> None:
    """A browser holding an admin session cannot be made to act by adding any bearer header."""
    admin = await dashboard.admin()
    for secret in ("not-a-token", "kvd_" + "x" * 43):
        # The session cookie and its CSRF token are both sent: the bearer header alone counts.
        answer = await admin.http.post(
            "/api/v1/admin/hypervisors",
            json=HYPERVISOR,
            headers={"Authorization": f"Bearer {secret}", "X-CSRF-Token": admin.csrf or ""},
        )
        assert (answer.status_code, answer.json()["error"]) == (401, "invalid_token"), secret
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        reading = await admin.http.get(
            "/api/v1/admin/hypervisors", headers={"Authorization": f"Bearer {secret}"}
        )
        assert reading.status_code == 401
    assert (await admin.get("/api/v1/admin/hypervisors")).json()["hypervisors"] == []
    # A portal user's cookie beside an admin token changes nothing either: the token's identity acts.
    secret = await make_token(admin, "beside a portal cookie")
    portal = await client_user_session(dashboard)
    answer = await portal.http.get("/api/v1/admin/summary", headers=bearer(secret))
    assert answer.status_code == 200


async def test_tokens_end_when_revoked_expired_or_their_user_changes(dashboard: RunningDashboard) -> None:
    db = dashboard.services.db
    admin = await dashboard.admin()
    await create_local_user(db, "ops", "ops-password-12345", role="admin")
    other = dashboard.client()
    assert (await other.login("ops", "ops-password-12345")).status_code == 303
    revoked, expired, disabled, reset = [await make_token(other, name) for name in ("r", "e", "d", "p")]

    async def works(secret: str) -> bool:
        async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as script:
            answer = await script.get("/api/v1/admin/summary", headers=bearer(secret))
        assert answer.status_code in (200, 401), answer.text
        return answer.status_code == 200

    assert all([await works(secret) for secret in (revoked, expired, disabled, reset)])
    # Any administrator may revoke another's token, on the page (it lists the others' too).
    page = await admin.get("/account/tokens")
    token_id = await db.fetch_val(sa.select(api_tokens.c.id).where(api_tokens.c.name == "r"))
    assert f"/account/tokens/{token_id}/revoke" in page.text
    assert (await admin.post(f"/account/tokens/{token_id}/revoke")).status_code == 303
    assert not await works(revoked)
    await db.execute(
        api_tokens.update().where(api_tokens.c.name == "e").values(expires_at=utcnow() - timedelta(seconds=1))
    )
    assert not await works(expired)
    assert await works(disabled)
    ops_id = await db.fetch_val(sa.text("SELECT id FROM users WHERE username = 'ops'"))
    await reset_password(db, int(ops_id))
    assert not await works(reset) and not await works(disabled), "a password reset ends every token"
    secret = await make_token(admin, "mine")
    admin_id = await db.fetch_val(sa.text("SELECT id FROM users WHERE username = 'admin'"))
    await create_local_user(db, "spare", "spare-password-12345", role="admin")
    await set_disabled(db, int(admin_id), True)
    assert not await works(secret), "a disabled administrator's token is refused"


async def test_tokens_through_the_api(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    secret = await make_token(admin, "bootstrap")
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as script:
        made = await script.post(
            "/api/v1/admin/tokens",
            json={"name": "ci", "read_only": True, "expires_in_days": 7},
            headers=bearer(secret),
        )
        assert made.status_code == 201, made.text
        body = made.json()
        assert body["secret"].startswith("kvd_") and body["token"]["read_only"] is True
        assert body["token"]["expires_at"].endswith("Z")
        listed = await script.get("/api/v1/admin/tokens", headers=bearer(body["secret"]))
        assert {t["name"] for t in listed.json()["tokens"]} == {"bootstrap", "ci"}
        bad = await script.post(
            "/api/v1/admin/tokens", json={"name": "", "read_only": "yes"}, headers=bearer(secret)
        )
        assert bad.status_code == 400 and set(bad.json()["fields"]) == {"name", "read_only"}
        gone = await script.delete(f"/api/v1/admin/tokens/{body['token']['id']}", headers=bearer(secret))
        assert gone.status_code == 204
        assert (await script.get("/api/v1/admin/tokens", headers=bearer(body["secret"]))).status_code == 401
        again = await script.delete(f"/api/v1/admin/tokens/{body['token']['id']}", headers=bearer(secret))
        assert (again.status_code, again.json()["error"]) == (404, "not_found")
    # The page refuses what the API refuses, by field.
    refused = await admin.post("/account/tokens", {"name": "", "expires_in_days": "0"})
    assert refused.status_code == 400 and "name" in refused.text


async def test_a_token_expires_on_the_dashboards_clock(dashboard: RunningDashboard) -> None:
    """Expiry is read on the clock every time-bound rule of the dashboard reads: moved a day on,
    a one-day token is refused and listed no more."""
    admin = await dashboard.admin()
    daily = await make_token(admin, "daily", expires_in_days="1")
    lasting = await make_token(admin, "lasting", expires_in_days="0")
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as script:
        assert (await script.get("/api/v1/admin/summary", headers=bearer(daily))).status_code == 200
        dashboard.clock.advance(timedelta(days=1, minutes=1).total_seconds())
        refused = await script.get("/api/v1/admin/summary", headers=bearer(daily))
        assert (refused.status_code, refused.json()["error"]) == (401, "invalid_token")
        listed = await script.get("/api/v1/admin/tokens?all=true", headers=bearer(lasting))
        assert listed.status_code == 200, listed.text
        assert {token["name"] for token in listed.json()["tokens"]} == {"lasting"}
