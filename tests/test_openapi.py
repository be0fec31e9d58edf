"""The OpenAPI 3.1 description is generated from the routes and their models, describes every
route, is valid, and the answers the suite receives are held to it (tests/openapi_conformance.py)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from openapi_spec_validator import validate
from pydantic import BaseModel
from starlette.routing import Mount, Route, WebSocketRoute

from app.api.describe import EMPTY, PAGE, describe, described
from app.api.ids import MAX_ID
from app.api.openapi import openapi_path
from app.api.out import Out
from tests.browser_steps import By, severe_console_errors, wait
from tests.dashboard import RunningDashboard
from tests.openapi_conformance import Seen, problems
from tests.services.browser import BrowserFactory


async def test_every_route_is_described(dashboard: RunningDashboard) -> None:
    """Pages, forms and JSON alike; only websockets and static files are not HTTP operations."""
    undescribed = [
        f"{sorted(route.methods or ())} {route.path}"
        for route in dashboard.app.routes
        if isinstance(route, Route) and described(route.endpoint) is None
    ]
    assert undescribed == []
    others = [r for r in dashboard.app.routes if not isinstance(r, Route | Mount | WebSocketRoute)]
    assert others == []


async def test_the_served_description_is_valid_and_names_every_api_route(dashboard: RunningDashboard) -> None:
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as http:
        document = (await http.get("/api/v1/openapi.json")).json()
    await asyncio.to_thread(validate, document)
    assert document["openapi"] == "3.1.0"
    described_ops = {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}
    served = {
        (openapi_path(route.path), method)
        for route in dashboard.app.routes
        if isinstance(route, Route) and route.path.startswith("/api/v1/")
        for method in (route.methods or set()) - {"HEAD"}
    }
    assert described_ops == served
    # Both APIs, their credentials, and the one error model everywhere.
    assert {"/api/v1/pools", "/api/v1/admin/vms", "/api/v1/admin/tokens"} <= set(document["paths"])
    assert set(document["components"]["securitySchemes"]) == {"bearer", "adminToken", "session"}
    login = document["paths"]["/api/v1/login"]["post"]
    assert login["security"] == [] and "$ref" in login["requestBody"]["content"]["application/json"]["schema"]
    admin_op = document["paths"]["/api/v1/admin/vms"]["get"]
    assert admin_op["security"] == [{"adminToken": []}, {"session": []}]
    assert admin_op["responses"]["default"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }


class Thing(Out):
    """A thing."""

    name: str


@describe("a described thing", responses={200: Thing, 204: EMPTY})
async def thing(request: object) -> None:
    raise NotImplementedError


@describe("a page", responses={200: PAGE})
async def page(request: object) -> None:
    raise NotImplementedError


async def undescribed(request: object) -> None:
    raise NotImplementedError


ROUTES = [
    Route("/api/v1/things/{thing_id:int}", thing, methods=["GET", "DELETE"]),
    Route("/api/v1/page", page, methods=["GET"]),
    Route("/api/v1/other", undescribed, methods=["GET"]),
]


def test_the_conformance_check_finds_what_is_not_described() -> None:
    def seen(
        method: str, path: str, status: int, body: bytes, content_type: str = "application/json"
    ) -> Seen:
        return Seen(method, path, status, content_type, body)

    good = [
        seen("GET", "/api/v1/things/1", 200, b'{"name": "a"}'),
        seen("DELETE", "/api/v1/things/1", 204, b"", ""),
        seen("GET", "/api/v1/things/1", 404, b'{"error": "not_found", "message": "No."}'),
        seen("GET", "/api/v1/page", 200, b"<html></html>", "text/html; charset=utf-8"),
    ]
    assert problems(ROUTES, good) == []
    bad = {
        "undescribed field": seen("GET", "/api/v1/things/1", 200, b'{"name": "a", "extra": 1}'),
        "wrong type": seen("GET", "/api/v1/things/1", 200, b'{"name": 5}'),
        "undescribed status": seen("GET", "/api/v1/things/1", 201, b'{"name": "a"}'),
        "body where none is described": seen("DELETE", "/api/v1/things/1", 204, b"{}"),
        "an error outside the model": seen("GET", "/api/v1/things/1", 409, b'{"detail": "conflict"}'),
        "another media type": seen("GET", "/api/v1/page", 200, b"{}"),
        "undescribed route": seen("GET", "/api/v1/other", 200, b"{}"),
    }
    for label, answer in bad.items():
        assert problems(ROUTES, [answer]) != [], label


def test_models_become_components_and_the_error_model_is_one() -> None:
    from app.api.openapi import openapi_document

    document = openapi_document(ROUTES, title="t", description="d")
    schemas = document["components"]["schemas"]
    assert schemas["Thing"]["additionalProperties"] is False and schemas["Thing"]["required"] == ["name"]
    get = document["paths"]["/api/v1/things/{thing_id}"]["get"]
    assert get["parameters"] == [
        {
            "name": "thing_id",
            "in": "path",
            "required": True,
            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
        }
    ]
    assert get["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Thing"
    }
    assert "/api/v1/other" not in document["paths"], "undescribed routes are left out (and refused by a test)"
    assert issubclass(Thing, BaseModel)


@pytest.mark.browser
async def test_the_reference_page_renders_the_description_under_the_csp(
    dashboard: RunningDashboard, browser: BrowserFactory
) -> None:
    driver = await asyncio.to_thread(browser.new, width=1280, height=900)
    try:
        await asyncio.to_thread(driver.get, f"{dashboard.url}/api/docs")

        def operations(d: object) -> list[str]:
            found = d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")  # type: ignore[attr-defined]
            return [str(e.get_attribute("data-path")) for e in found]

        shown = await asyncio.to_thread(lambda: wait(driver).until(lambda d: operations(d) or None))
        assert shown is not None
        assert "/api/v1/login" in shown and "/api/v1/admin/vms/{vm_id}" in shown
        assert severe_console_errors(driver) == []
    finally:
        await asyncio.to_thread(browser.quit, driver)
