"""Areas of the navigation whose pages are not built yet: a clean "coming" page each.

The module that builds an area takes its entry out of ``UPCOMING`` and adds its own routes.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api.describe import PAGE, describe
from app.views.forms import render
from app.views.guards import admin_required

# path -> (navigation key, title, icon, what the area will do)
UPCOMING: dict[str, tuple[str, str, str, str]] = {}


@admin_required
@describe("An area still to come", responses={200: PAGE})
async def upcoming_page(request: Request) -> Response:
    key, title, icon, description = UPCOMING[request.url.path]
    return render(
        request,
        "upcoming.html",
        {"active": key, "title": title, "icon": icon, "description": description},
    )


routes = [Route(path, upcoming_page, methods=["GET"], name=f"upcoming_{path[1:]}") for path in UPCOMING]
