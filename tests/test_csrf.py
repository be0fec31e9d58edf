"""Every state-changing request made with the session cookie needs the session's CSRF token."""

from __future__ import annotations

from tests.dashboard import RunningDashboard

HYPERVISOR = {
    "name": "csrf-demo",
    "transport": "test",
    "images_dir": "/srv/images",
    "volatile_dir": "/srv/volatile",
    "iso_dir": "/srv/iso",
}


async def test_a_form_post_without_a_token_is_refused(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    response = await admin.http.post("/hypervisors/new", data=HYPERVISOR)
    assert response.status_code == 403
    assert "CSRF" in response.text
    listing = await admin.get("/api/v1/admin/hypervisors")
    assert listing.json()["hypervisors"] == [], "nothing was created"


async def test_a_form_post_with_a_wrong_token_is_refused(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    response = await admin.http.post("/hypervisors/new", data={**HYPERVISOR, "csrf_token": "not-the-token"})
    assert response.status_code == 403


async def test_a_form_post_with_the_token_works(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    response = await admin.post("/hypervisors/new", HYPERVISOR)
    assert response.status_code == 303
    listing = await admin.get("/api/v1/admin/hypervisors")
    assert [hv["name"] for hv in listing.json()["hypervisors"]] == ["csrf-demo"]


async def test_json_requests_need_the_header_and_get_a_json_refusal(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    refused = await admin.http.post("/api/v1/admin/hypervisors", json=HYPERVISOR)
    assert refused.status_code == 403
    assert refused.json()["error"] == "csrf_failed"
    wrong = await admin.http.post(
        "/api/v1/admin/hypervisors", json=HYPERVISOR, headers={"X-CSRF-Token": "nope"}
    )
    assert wrong.status_code == 403
    accepted = await admin.post("/api/v1/admin/hypervisors", json=HYPERVISOR)
    assert accepted.status_code == 201


async def test_the_token_of_another_session_does_not_work(dashboard: RunningDashboard) -> None:
    first = await dashboard.admin()
    second = await dashboard.admin()
    assert first.csrf != second.csrf
    response = await first.http.post("/hypervisors/new", data={**HYPERVISOR, "csrf_token": second.csrf})
    assert response.status_code == 403


async def test_logout_needs_the_token_too(dashboard: RunningDashboard) -> None:
    """Otherwise any site could log an admin out with a hidden form."""
    admin = await dashboard.admin()
    refused = await admin.http.post("/logout")
    assert refused.status_code == 403
    assert (await admin.get("/")).status_code == 200, "still logged in"


async def test_a_bearer_header_skips_the_check_on_the_apis_only_and_drops_the_cookie(
    dashboard: RunningDashboard,
) -> None:
    """A cookie-authenticated request cannot dodge the token by adding any bearer header."""
    admin = await dashboard.admin()
    bearer = {"Authorization": "Bearer anything-at-all"}
    form = await admin.http.post("/hypervisors/new", data=HYPERVISOR, headers=bearer)
    assert form.status_code == 403
    # On the APIs the header alone authenticates: the cookie is not even read, so an unknown token
    # is refused as such, and the admin's session cannot act.
    api = await admin.http.post("/api/v1/admin/hypervisors", json=HYPERVISOR, headers=bearer)
    assert (api.status_code, api.json()["error"]) == (401, "invalid_token")
    listing = await admin.get("/api/v1/admin/hypervisors")
    assert listing.json()["hypervisors"] == [], "nothing was created"
    broker = await admin.http.post("/api/v1/logout", headers=bearer)
    assert (broker.status_code, broker.json()["error"]) == (401, "invalid_token")
