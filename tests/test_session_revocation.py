"""Server-side sessions: the cookie is a random id only, and an ended session stays ended wherever its
cookie (or the user's API token) is replayed from."""

from __future__ import annotations

import hashlib
import os
import re
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from app.auth.first_admin import announce_first_admin, first_admin_password_path
from app.auth.session_cookie import COOKIE_NAME
from app.clock import utcnow
from app.db.schema import sessions, users
from tests.broker.records import CLIENT_PASSWORD, add_client
from tests.dashboard import BrowserLikeClient, RunningDashboard, make_settings


def replay(dashboard: RunningDashboard, cookie: str) -> BrowserLikeClient:
    """Another browser (an attacker's, say) presenting a copied session cookie."""
    client = dashboard.client()
    client.http.cookies.set(COOKIE_NAME, cookie)
    return client


def cookie_of(client: BrowserLikeClient) -> str:
    value = client.http.cookies.get(COOKIE_NAME)
    assert value is not None
    return value


async def portal_user(dashboard: RunningDashboard, name: str) -> tuple[int, BrowserLikeClient, str]:
    """(user id, a portal browser logged in, an API token) of a new portal user."""
    user_id = await add_client(dashboard.services.db, name)
    browser = dashboard.client()
    assert (await browser.login(name, CLIENT_PASSWORD, path="/client/login")).status_code == 303
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as http:
        answer = await http.post("/api/v1/login", json={"username": name, "password": CLIENT_PASSWORD})
    assert answer.status_code == 200
    return user_id, browser, str(answer.json()["token"])


async def token_works(dashboard: RunningDashboard, token: str) -> bool:
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as http:
        answer = await http.get("/api/v1/pools", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code in (200, 401)
    return answer.status_code == 200


async def test_the_cookie_is_a_random_id_and_the_database_keeps_only_its_hash(
    dashboard: RunningDashboard,
) -> None:
    admin = await dashboard.admin()
    cookie = cookie_of(admin)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", cookie), "256 random bits, nothing else"
    rows = await dashboard.services.db.fetch_all(sessions.select())
    assert [row["id_hash"] for row in rows] == [hashlib.sha256(cookie.encode()).hexdigest()]
    assert all(cookie not in str(value) for row in rows for value in row._mapping.values())


async def test_an_old_cookie_replayed_after_logout_gets_the_log_in_page(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    old = cookie_of(admin)
    assert (await replay(dashboard, old).get("/")).status_code == 200, "a copy works while the session lives"
    assert (await admin.post("/logout")).status_code == 303
    assert cookie_of(admin) != old, "log-out gives the browser a new id"
    answer = await replay(dashboard, old).get("/hypervisors")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login")


async def test_a_portal_logout_ends_that_session_only(dashboard: RunningDashboard) -> None:
    """Log-out ends this browser's session; the same account's thin client keeps its token."""
    _, browser, token = await portal_user(dashboard, "kiosk-7")
    old = cookie_of(browser)
    assert (await browser.post("/client/logout")).status_code == 303
    answer = await replay(dashboard, old).get("/client")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/client/login")
    assert await token_works(dashboard, token)


async def test_a_password_change_ends_every_other_session_of_the_user(dashboard: RunningDashboard) -> None:
    here, elsewhere = await dashboard.admin(), await dashboard.admin()
    stolen = cookie_of(elsewhere)
    changed = await here.post(
        "/account/password",
        {
            "current_password": dashboard.admin_password,
            "new_password": "a-brand-new-pw-1",
            "repeat_password": "a-brand-new-pw-1",
        },
    )
    assert changed.status_code == 303
    assert (await here.get("/hypervisors")).status_code == 200, "this browser goes on in a fresh session"
    assert (await replay(dashboard, stolen).get("/hypervisors")).status_code == 303
    assert (await elsewhere.get("/")).status_code == 303


async def test_a_password_reset_ends_the_users_sessions_and_api_tokens(dashboard: RunningDashboard) -> None:
    user_id, browser, token = await portal_user(dashboard, "reset-me")
    old = cookie_of(browser)
    admin = await dashboard.admin()
    assert (await admin.post(f"/users/{user_id}/password")).status_code == 200
    assert (await replay(dashboard, old).get("/client")).status_code == 303
    assert not await token_works(dashboard, token)


async def test_disabling_a_user_ends_its_sessions_for_good(dashboard: RunningDashboard) -> None:
    """Enabling the account again does not bring the old cookie or token back."""
    user_id, browser, token = await portal_user(dashboard, "leaver")
    old = cookie_of(browser)
    admin = await dashboard.admin()
    assert (await admin.post(f"/users/{user_id}/disabled", {"disabled": "1"})).status_code == 303
    assert (await replay(dashboard, old).get("/client")).status_code == 303
    assert not await token_works(dashboard, token)
    assert (await admin.post(f"/users/{user_id}/disabled", {"disabled": "0"})).status_code == 303
    assert (await replay(dashboard, old).get("/client")).status_code == 303
    assert not await token_works(dashboard, token)
    assert (
        await dashboard.client().login("leaver", CLIENT_PASSWORD, path="/client/login")
    ).status_code == 303


async def test_a_log_in_replaces_the_id_the_browser_had(dashboard: RunningDashboard) -> None:
    """No session fixation: an id planted before the log-in is worth nothing after it."""
    client = dashboard.client()
    await client.refresh_csrf()
    planted = cookie_of(client)
    assert (await client.login("admin", dashboard.admin_password)).status_code == 303
    assert cookie_of(client) != planted
    assert (await replay(dashboard, planted).get("/")).status_code == 303


def test_the_first_admins_password_goes_to_a_private_file_not_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Settings alone (no database, no dashboard): this is what the first start calls.
    settings = make_settings(tmp_path / "var", f"sqlite:///{tmp_path / 'never-opened.sqlite3'}")
    path = announce_first_admin(settings, "first", "generated-Secret-123")
    assert path == first_admin_password_path(settings.data_dir)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert path.read_text().splitlines() == ["first", "generated-Secret-123"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert str(path) in logged and "generated-Secret-123" not in logged

    # On a terminal (make run) it is shown there too.
    controller, terminal_fd = os.openpty()
    with os.fdopen(terminal_fd, "w") as terminal:
        announce_first_admin(settings, "first", "generated-Secret-456", terminal=terminal)
    shown = os.read(controller, 4096).decode()
    os.close(controller)
    assert "generated-Secret-456" in shown and str(path) in shown


async def test_the_first_admins_file_goes_once_the_password_is_changed(dashboard: RunningDashboard) -> None:
    announce_first_admin(dashboard.settings, "admin", dashboard.admin_password)
    path = first_admin_password_path(dashboard.settings.data_dir)
    admin = await dashboard.admin()
    changed = await admin.post(
        "/account/password",
        {
            "current_password": dashboard.admin_password,
            "new_password": "a-brand-new-pw-2",
            "repeat_password": "a-brand-new-pw-2",
        },
    )
    assert changed.status_code == 303
    assert not path.exists()


async def test_sessions_of_a_deleted_user_go_with_it(dashboard: RunningDashboard) -> None:
    user_id, _browser, _token = await portal_user(dashboard, "gone-soon")
    admin = await dashboard.admin()
    assert (await admin.post(f"/users/{user_id}/delete")).status_code == 303
    db = dashboard.services.db
    assert await db.fetch_one(users.select().where(users.c.id == user_id)) is None
    left = await db.fetch_val(
        sa.select(sa.func.count()).select_from(sessions).where(sessions.c.user_id == user_id)
    )
    assert left == 0


async def test_ended_sessions_are_purged(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    db = dashboard.services.db
    assert (await admin.get("/")).status_code == 200
    idle = dashboard.settings.security.session_idle_timeout
    stale = utcnow() - timedelta(seconds=idle + 5)
    await db.execute(sessions.update().values(seen_at=stale))
    await dashboard.services.sessions.purge()
    assert await db.fetch_val(sa.select(sa.func.count()).select_from(sessions)) == 0
    assert (await admin.get("/")).status_code == 303
