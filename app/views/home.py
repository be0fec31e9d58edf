"""The dashboard's landing page and the areas still to come."""

from __future__ import annotations

from dataclasses import asdict

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.api.describe import PAGE, describe
from app.api.responses import Summary
from app.i18n import gettext as _
from app.inventory.summary import summarize
from app.services import services_of
from app.views.forms import render
from app.views.guards import admin_api, admin_required


@admin_required
@describe("The overview", responses={200: PAGE})
async def overview(request: Request) -> Response:
    services = services_of(request)
    summary = await summarize(services.db)
    recent = await services.audit.recent(limit=8)
    return render(
        request,
        "overview.html",
        {"active": "overview", "title": _("Overview"), "summary": summary, "recent": recent},
    )


@admin_api
@describe("The overview's figures", responses={200: Summary})
async def summary_api(request: Request) -> Response:
    """The overview's figures, for automation and for the overview page's live refresh."""
    summary = await summarize(services_of(request).db)
    return JSONResponse({**asdict(summary), "hypervisors_unknown": summary.hypervisors_unknown})


routes = [
    Route("/", overview, name="overview"),
    Route("/api/v1/admin/summary", summary_api, methods=["GET"]),
]
