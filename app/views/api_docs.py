"""The API's description: the generated OpenAPI 3.1 document and its interactive reference page."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.api.describe import PAGE, Media, describe
from app.api.openapi import openapi_document
from app.i18n import gettext as _
from app.views.forms import render

DESCRIPTION = (
    "The broker API (desktops for thin clients and scripts: log in with POST /api/v1/login, then send "
    "the token as a bearer token) and the admin API (everything the dashboard does, under "
    "/api/v1/admin/: send an administrator's personal API token as a bearer token). Errors are "
    "always {error, message}, with fields for a refused body and a few named details."
)


def api_document(request: Request) -> dict[str, Any]:
    """Generated once per app from its routes (they do not change while it runs)."""
    state = request.app.state
    document: dict[str, Any] | None = getattr(state, "openapi_document", None)
    if document is None:
        document = openapi_document(request.app.routes, title="KVM-VDI API", description=DESCRIPTION)
        state.openapi_document = document
    return document


@describe(
    "This description (OpenAPI 3.1)",
    responses={200: Media("application/json", "the OpenAPI 3.1 document")},
)
async def openapi(request: Request) -> Response:
    return JSONResponse(api_document(request))


@describe("The interactive API reference", responses={200: PAGE})
async def reference(request: Request) -> Response:
    return render(request, "api/reference.html", {"title": _("API reference"), "active": "api"})


routes = [
    Route("/api/v1/openapi.json", openapi, methods=["GET"]),
    Route("/api/docs", reference, methods=["GET"], name="api_reference"),
]
