"""The dashboard's landing page."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.auth.session import admin_required
from app.views.forms import render


@admin_required
async def overview(request: Request) -> Response:
    return render(request, "overview.html", {"active": "overview", "title": "Overview"})


routes = [Route("/", overview, name="overview")]
