"""The dashboard's landing page and the areas still to come."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.auth.session import admin_required
from app.inventory.summary import summarize
from app.services import services_of
from app.views.forms import render


@admin_required
async def overview(request: Request) -> Response:
    services = services_of(request)
    summary = await summarize(services.db)
    recent = await services.audit.recent(limit=8)
    return render(
        request,
        "overview.html",
        {"active": "overview", "title": "Overview", "summary": summary, "recent": recent},
    )


routes = [Route("/", overview, name="overview")]
