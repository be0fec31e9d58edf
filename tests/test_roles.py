"""Roles: a client (desktop user) session never reaches an admin page or admin API."""

from __future__ import annotations

import re

from starlette.routing import Mount, Route, WebSocketRoute

from tests.client_session import client_user_session
from tests.dashboard import RunningDashboard

# Routes anyone may reach: log-in, log-out, static assets, the live socket (it checks the session itself),
# the console websocket (its console ticket cookie is the credential, checked per connection).
PUBLIC = {"/login", "/logout", "/live", "/console/ws/{vm_id:id}"}
# The language switch (it saves the choice with the account only for a signed-in user) and
# the scripts' catalogues.
PUBLIC |= {"/language", "/static/i18n/{language}.js"}
# The client portal's log-in and log-out, the broker API's log-in, the API description and its reference page.
PUBLIC |= {"/client/login", "/client/logout", "/api/v1/login", "/api/v1/openapi.json", "/api/docs"}
# Probes of load balancers and systemd: no data, only whether this replica serves.
PUBLIC |= {"/healthz", "/readyz"}


def _admin_routes(dashboard: RunningDashboard) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for route in dashboard.app.routes:
        if isinstance(route, Route) and getattr(route.endpoint, "required_role", None) == "admin":
            path = re.sub(r"\{[^}]+\}", "1", route.path)
            found.extend((method, path) for method in sorted(route.methods or ()) if method != "HEAD")
    return found


async def test_every_route_is_guarded_or_deliberately_public(dashboard: RunningDashboard) -> None:
    for route in dashboard.app.routes:
        if isinstance(route, Mount) or route.path in PUBLIC:
            continue
        assert isinstance(route, Route | WebSocketRoute)
        assert getattr(route.endpoint, "required_role", None) is not None, f"{route.path} has no guard"


async def test_a_client_session_gets_403_on_every_admin_route(dashboard: RunningDashboard) -> None:
    routes = _admin_routes(dashboard)
    paths = {path for _, path in routes}
    # The guard test covers at least these areas; new admin routes join automatically.
    assert {"/", "/hypervisors", "/hypervisors/new", "/settings", "/api/v1/admin/hypervisors"} <= paths
    client = await client_user_session(dashboard)
    await client.refresh_csrf("/login")
    for method, path in routes:
        headers = {"X-CSRF-Token": client.csrf or ""}
        response = await client.http.request(method, path, headers=headers)
        assert response.status_code == 403, (method, path, response.status_code)
        if path.startswith("/api/"):
            assert response.json()["error"] == "forbidden", path
        else:
            assert "This page is for administrators" in response.text, path


async def test_the_same_routes_let_an_admin_in(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    for path in ["/", "/hypervisors", "/settings", "/api/v1/admin/hypervisors"]:
        assert (await admin.get(path)).status_code == 200, path


async def test_a_client_cannot_log_in_on_the_admin_log_in_page(dashboard: RunningDashboard) -> None:
    from app.auth.accounts import create_local_user

    await create_local_user(dashboard.services.db, "desk", "desk-password-1", role="client")
    response = await dashboard.client().login("desk", "desk-password-1")
    assert response.status_code == 401
    assert "Wrong user name or password" in response.text
