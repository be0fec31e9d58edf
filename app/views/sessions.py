"""Admin view of desktop sessions: who holds which desktop, since when, from where."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api.describe import PAGE, REDIRECT, describe
from app.api.forms import NoFields, Toast
from app.broker.leases import active_sessions
from app.cluster.census import OpenConsole
from app.i18n import gettext as _
from app.services import services_of
from app.views.forms import client_address, redirect_with_toast, render
from app.views.guards import admin_required


@admin_required
@describe("Who holds which desktop, with open consoles", query=Toast, responses={200: PAGE})
async def index(request: Request) -> Response:
    services = services_of(request)
    # Open console sessions per (user, desktop), on any replica: in a browser ("websocket") or
    # remote-viewer ("gateway").
    consoles: dict[tuple[int, int], list[OpenConsole]] = {}
    for console in await services.consoles.open_consoles():
        consoles.setdefault((console.user_id, console.vm_id), []).append(console)
    return render(
        request,
        "sessions/index.html",
        {
            "title": _("Sessions"),
            "active": "sessions",
            "sessions": await active_sessions(services.db),
            "consoles": consoles,
            "toast": request.query_params.get("toast", ""),
        },
    )


@admin_required
@describe("End a session (the lease; its consoles close)", form=NoFields, responses={303: REDIRECT})
async def end(request: Request) -> Response:
    services = services_of(request)
    ended = await services.broker.end_session(
        int(request.path_params["lease_id"]),
        actor=request.state.user.username,
        client_address=client_address(request),
    )
    toast = _("Session ended") if ended else _("That session had already ended")
    return redirect_with_toast("/sessions", toast)


routes = [
    Route("/sessions", index, methods=["GET"], name="sessions"),
    Route("/sessions/{lease_id:id}/end", end, methods=["POST"]),
]
