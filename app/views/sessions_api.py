"""Desktop sessions through the admin API: ``/api/v1/admin/sessions``: who holds which desktop,
with their open consoles, and ending one, as the Sessions page does."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api.describe import EMPTY, describe
from app.api.errors import ApiError
from app.api.out import answer
from app.api.pool_models import SessionList, SessionOut
from app.broker.leases import active_sessions
from app.cluster.census import OpenConsole
from app.i18n import gettext as _
from app.services import services_of
from app.views.forms import client_address
from app.views.guards import admin_api

PREFIX = "/api/v1/admin/sessions"


@admin_api
@describe("Who holds which desktop, with the open consoles (on any replica)", responses={200: SessionList})
async def list_sessions(request: Request) -> Response:
    services = services_of(request)
    consoles: dict[tuple[int, int], list[OpenConsole]] = {}
    for console in await services.consoles.open_consoles():
        consoles.setdefault((console.user_id, console.vm_id), []).append(console)
    sessions = await active_sessions(services.db)
    return answer(
        SessionList(
            sessions=[
                SessionOut.of(session, consoles.get((session.user_id, session.vm_id), []))
                for session in sessions
            ]
        )
    )


@admin_api
@describe(
    "End a session: its consoles close, the desktop is reset (as its pool says) and returned",
    responses={204: EMPTY},
    description="404 not_found when no such session is open (it may have ended meanwhile).",
)
async def end_session(request: Request) -> Response:
    lease_id = int(request.path_params["lease_id"])
    ended = await services_of(request).broker.end_session(
        lease_id,
        actor=request.state.user.username,
        client_address=client_address(request),
    )
    if not ended:
        raise ApiError(404, "not_found", _("No open session {lease_id}.").format(lease_id=lease_id))
    return Response(status_code=204)


routes = [
    Route(PREFIX, list_sessions, methods=["GET"]),
    Route(f"{PREFIX}/{{lease_id:id}}", end_session, methods=["DELETE"]),
]
