"""Admin sessions: cookie flags, expiry, log-out, forced and voluntary password changes."""

from __future__ import annotations

import pytest

from app.auth.accounts import create_local_user
from tests.dashboard import BrowserLikeClient, DashboardFactory, RunningDashboard


def _session_cookie_header(response: object) -> str:
    headers = response.headers.get_list("set-cookie")  # type: ignore[attr-defined]
    found = [h for h in headers if h.startswith("kvmvdi_session=")]
    assert found, f"no session cookie in {headers}"
    return found[-1].lower()


async def test_the_session_cookie_is_httponly_and_samesite_lax(dashboard: RunningDashboard) -> None:
    client = dashboard.client()
    await client.refresh_csrf()
    response = await client.post("/login", {"username": "admin", "password": dashboard.admin_password})
    assert response.status_code == 303
    header = _session_cookie_header(response)
    assert "httponly" in header
    assert "samesite=lax" in header
    assert "secure" not in header, "plain http: a Secure cookie would never come back"
    assert f"max-age={dashboard.settings.security.session_max_age}" in header


async def test_the_session_cookie_is_secure_when_served_over_https(
    dashboard_factory: DashboardFactory,
) -> None:
    running = await dashboard_factory(server={"https": True})
    # The log-in page already starts a session (it holds the CSRF token).
    response = await running.client().get("/login")
    header = _session_cookie_header(response)
    assert "secure" in header and "httponly" in header and "samesite=lax" in header
    assert response.headers["strict-transport-security"].startswith("max-age=")


async def test_pages_need_a_log_in_and_come_back_after_it(dashboard: RunningDashboard) -> None:
    client = dashboard.client()
    response = await client.get("/hypervisors?sort=name")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/hypervisors%3Fsort%3Dname"
    await client.refresh_csrf()
    login = await client.post(
        "/login",
        {"username": "admin", "password": dashboard.admin_password, "next": "/hypervisors?sort=name"},
    )
    assert login.headers["location"] == "/hypervisors?sort=name"


async def test_log_in_never_redirects_to_another_site(dashboard: RunningDashboard) -> None:
    client = dashboard.client()
    await client.refresh_csrf()
    for target in ["https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:alert(1)"]:
        login = await client.post(
            "/login", {"username": "admin", "password": dashboard.admin_password, "next": target}
        )
        assert login.headers["location"] == "/", target
        await client.refresh_csrf("/")


async def test_logout_ends_the_session(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    old_cookie = admin.http.cookies.get("kvmvdi_session")
    response = await admin.post("/logout")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login?toast=")
    assert (await admin.get("/")).status_code == 303
    assert [e["actor"] for e in await dashboard.services.audit.recent(action="logout")] == ["admin"]
    assert old_cookie is not None


async def test_a_session_ends_at_its_maximum_age_even_when_active(
    dashboard_factory: DashboardFactory,
) -> None:
    running = await dashboard_factory(security={"session_max_age": 3600, "session_idle_timeout": 900})
    admin = await running.admin()
    for _ in range(4):
        running.clock.advance(800)
        assert (await admin.get("/")).status_code == 200, "active, and younger than an hour"
    running.clock.advance(800)
    response = await admin.get("/")
    assert response.status_code == 303, "active all along, but logged in more than an hour ago"
    assert response.headers["location"].startswith("/login")


async def test_an_idle_session_ends_and_activity_keeps_it_alive(dashboard_factory: DashboardFactory) -> None:
    running = await dashboard_factory(security={"session_idle_timeout": 600})
    admin = await running.admin()
    for _ in range(3):
        running.clock.advance(500)
        assert (await admin.get("/")).status_code == 200, "a request within the idle timeout keeps it"
    running.clock.advance(700)
    assert (await admin.get("/")).status_code == 303, "idle for longer than the timeout: logged out"


async def test_a_disabled_user_is_logged_out_at_once(dashboard: RunningDashboard) -> None:
    from app.db.schema import users

    admin = await dashboard.admin()
    await dashboard.services.db.execute(
        users.update().where(users.c.username == "admin").values(disabled=True)
    )
    assert (await admin.get("/")).status_code == 303


async def _first_login(dashboard: RunningDashboard, password: str) -> BrowserLikeClient:
    await create_local_user(
        dashboard.services.db, "newadmin", password, role="admin", must_change_password=True
    )
    client = dashboard.client()
    response = await client.login("newadmin", password)
    assert response.status_code == 303
    assert response.headers["location"] == "/account/password"
    return client


async def test_a_generated_password_must_be_changed_before_anything_else(dashboard: RunningDashboard) -> None:
    client = await _first_login(dashboard, "generated-password-1")
    for path in ["/", "/hypervisors", "/settings"]:
        response = await client.get(path)
        assert response.status_code == 303 and response.headers["location"] == "/account/password", path
    api = await client.get("/api/v1/admin/hypervisors")
    assert api.status_code == 403 and api.json()["error"] == "password_change_required"
    page = await client.get("/account/password")
    assert "choose your own now" in page.text

    changed = await client.post(
        "/account/password",
        {
            "current_password": "generated-password-1",
            "new_password": "my-own-password-1",
            "repeat_password": "my-own-password-1",
        },
    )
    assert changed.status_code == 303
    assert changed.headers["location"].startswith("/?toast=")
    await client.refresh_csrf("/")
    assert (await client.get("/hypervisors")).status_code == 200

    relogin = dashboard.client()
    assert (await relogin.login("newadmin", "generated-password-1")).status_code == 401
    assert (await relogin.login("newadmin", "my-own-password-1")).headers["location"] == "/"


@pytest.mark.parametrize(
    ("form", "field", "message"),
    [
        (
            {"current_password": "wrong-one-123", "new_password": "x" * 12, "repeat_password": "x" * 12},
            "current_password",
            "Current password: wrong",
        ),
        (
            {
                "current_password": "admin-test-password-1",
                "new_password": "abcdefghijk",
                "repeat_password": "abcdefghijz",
            },
            "repeat_password",
            "differ",
        ),
        (
            {
                "current_password": "admin-test-password-1",
                "new_password": "short",
                "repeat_password": "short",
            },
            "new_password",
            "at least 10",
        ),
    ],
)
async def test_a_rejected_password_change_names_the_field(
    dashboard: RunningDashboard, form: dict[str, str], field: str, message: str
) -> None:
    admin = await dashboard.admin()
    response = await admin.post("/account/password", form)
    assert response.status_code == 400
    assert f'id="e-{field}"' in response.text
    assert message in response.text
    assert (await dashboard.client().login("admin", dashboard.admin_password)).status_code == 303, "unchanged"
