"""Every response carries the security headers: pages, JSON, static files, errors and refusals."""

from __future__ import annotations

import httpx

from tests.dashboard import RunningDashboard

EXPECTED = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


def _assert_headers(response: httpx.Response) -> None:
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, (response.url, name)
    policy = response.headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'", "no inline or foreign scripts"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"


async def test_headers_on_pages_api_static_and_errors(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    anonymous = dashboard.client()
    responses = [
        await anonymous.get("/login"),
        await anonymous.get("/"),  # redirect to log-in
        await admin.get("/"),
        await admin.get("/hypervisors"),
        await admin.get("/api/v1/admin/hypervisors"),
        await admin.get("/static/js/live.js"),
        await admin.get("/vendor/bootstrap/css/bootstrap.min.css"),
        await admin.get("/no/such/page"),
        await admin.get("/api/v1/no/such/thing"),
        await admin.http.post("/hypervisors/new", data={}),  # CSRF refusal
    ]
    assert [r.status_code for r in responses] == [200, 303, 200, 200, 200, 200, 200, 404, 404, 403]
    for response in responses:
        _assert_headers(response)


async def test_private_pages_are_not_cached_but_assets_may_be(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    assert (await admin.get("/hypervisors")).headers["cache-control"] == "no-store"
    assert (await admin.get("/api/v1/admin/hypervisors")).headers["cache-control"] == "no-store"
    assert "no-store" not in (await admin.get("/static/js/live.js")).headers.get("cache-control", "")


async def test_unknown_api_paths_answer_json_and_pages_answer_html(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    api = await admin.get("/api/v1/admin/nothing-here")
    assert api.json() == {"error": "not_found", "message": "Not found"}
    page = await admin.get("/nothing-here")
    assert "There is no page at this address" in page.text
    wrong_method = await admin.http.put(
        "/api/v1/admin/hypervisors", headers={"X-CSRF-Token": admin.csrf or ""}
    )
    assert wrong_method.status_code == 405 and wrong_method.json()["error"] == "method_not_allowed"
