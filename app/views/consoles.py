"""Consoles: the HTML5 console page, opening a console (JSON + ticket cookie), ``.vv`` downloads.

The admin handlers are thin wrappers around reusable pieces the client portal
uses for a user's own desktop: :func:`grant_response`, :func:`vv_response` and
:func:`console_page`.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from app.api.describe import PAGE, Media, describe
from app.api.errors import error_response as api_error_response
from app.api.forms import NoFields, VvQuery
from app.api.responses import ConsoleGrantBody
from app.i18n import gettext as _
from app.proxy.paths import CONSOLE_WEBSOCKET_PREFIX, TICKET_COOKIE
from app.proxy.service import ConsoleError, ConsoleGrant
from app.proxy.vv import MEDIA_TYPE, build_vv
from app.services import services_of
from app.views.console_socket import ConsoleSocket
from app.views.forms import client_address, render
from app.views.guards import admin_required
from app.vms.records import Vm, get_vm

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
VV = Media(MEDIA_TYPE, "a .vv file for remote-viewer, with a fresh console ticket (valid briefly)")
# Fetch metadata a browser sends with a navigation we may answer with a fresh console.
_SAME_SITE_FETCHES = frozenset({"same-origin", "none"})


def error_response(code: str, message: str, status: int) -> JSONResponse:
    return api_error_response(status, code, message, headers=NO_STORE)


def grant_response(request: Request, grant: ConsoleGrant) -> JSONResponse:
    """The console page's answer: the SPICE password in JSON, the ticket in an HttpOnly cookie.

    The cookie is scoped to the VM's console websocket path and lives as long as
    the ticket, so it is sent nowhere else and never seen by scripts.
    """
    settings = services_of(request).settings
    body = {
        "vm": {"id": grant.vm_id, "name": grant.vm_name},
        "password": grant.password,
        "websocket_path": grant.websocket_path,
        "expires_at": grant.expires_at.isoformat() + "Z",
        "password_valid_until": grant.password_valid_until.isoformat() + "Z",
    }
    response = JSONResponse(body, headers=NO_STORE)
    response.set_cookie(
        TICKET_COOKIE,
        grant.ticket,
        max_age=settings.console.ticket_ttl,
        path=grant.websocket_path,
        httponly=True,
        samesite="strict",
        secure=settings.server.https,
    )
    return response


def _filename(name: str) -> str:
    return (re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "console") + ".vv"


def vv_response(
    grant: ConsoleGrant, *, title: str, fullscreen: bool = False, usb_redirect: bool = True
) -> Response:
    """A ``.vv`` download (remote-viewer through the CONNECT gateway), never cached."""
    content = build_vv(grant, title=title, fullscreen=fullscreen, usb_redirect=usb_redirect)
    headers = {**NO_STORE, "Content-Disposition": f'attachment; filename="{_filename(grant.vm_name)}"'}
    return Response(content, media_type=MEDIA_TYPE, headers=headers)


def cross_site_navigation(request: Request) -> bool:
    """A browser request started by another site (a link or form elsewhere): it must not open consoles."""
    site = request.headers.get("sec-fetch-site")
    return site is not None and site not in _SAME_SITE_FETCHES


def console_page(
    request: Request,
    *,
    vm_id: int,
    vm_name: str,
    open_url: str,
    vv_url: str | None,
    back_url: str,
    heartbeat_url: str | None = None,
    heartbeat_interval: int = 0,
) -> Response:
    """The full-window HTML5 console of one VM; ``open_url`` answers with :func:`grant_response`."""
    context: dict[str, Any] = {
        "title": _("Console · {vm_name}").format(vm_name=vm_name),
        "vm_id": vm_id,
        "vm_name": vm_name,
        "open_url": open_url,
        "vv_url": vv_url,
        "back_url": back_url,
        "heartbeat_url": heartbeat_url,
        "heartbeat_interval": heartbeat_interval,
    }
    response = render(request, "consoles/console.html", context)
    response.headers.update(NO_STORE)
    return response


async def _vm_row(request: Request) -> Vm | None:
    return await get_vm(services_of(request).db, int(request.path_params["vm_id"]))


async def _open(request: Request, vm_id: int) -> ConsoleGrant:
    user = request.state.user
    return await services_of(request).consoles.open(
        user_id=user.id,
        vm_id=vm_id,
        client_address=client_address(request),
        gateway_host=request.url.hostname,
    )


@admin_required
@describe("The HTML5 console of a VM", responses={200: PAGE, 404: PAGE})
async def admin_console_page(request: Request) -> Response:
    vm = await _vm_row(request)
    if vm is None:
        return render(request, "errors/403.html", {"title": _("No such VM")}, status_code=404)
    return console_page(
        request,
        vm_id=vm.id,
        vm_name=vm.name,
        open_url=f"/vms/{vm.id}/console",
        vv_url=f"/vms/{vm.id}/console.vv",
        back_url="/vms",
    )


@admin_required
@describe(
    "A console ticket (HttpOnly cookie) and SPICE password for the console page",
    responses={200: ConsoleGrantBody},
)
async def admin_open_console(request: Request) -> Response:
    # JSON only, and the CSRF token must come in the header (the middleware checked its value).
    if "x-csrf-token" not in request.headers:
        return error_response(
            "csrf_header_required", _("Send the CSRF token in the X-CSRF-Token header."), 403
        )
    try:
        grant = await _open(request, request.path_params["vm_id"])
    except ConsoleError as exc:
        return error_response(exc.code, exc.message, exc.status)
    return grant_response(request, grant)


@admin_required
@describe("A .vv file for remote-viewer", form=NoFields, query=VvQuery, responses={200: VV})
async def admin_console_vv(request: Request) -> Response:
    """A ``.vv`` file: a POST (CSRF-checked), since it mints a ticket and sets a SPICE password."""
    if cross_site_navigation(request):
        return error_response("cross_site", _("Open the console from the dashboard."), 403)
    try:
        grant = await _open(request, request.path_params["vm_id"])
    except ConsoleError as exc:
        return error_response(exc.code, exc.message, exc.status)
    fullscreen = request.query_params.get("fullscreen") in ("1", "true", "yes")
    vm = await _vm_row(request)
    # The viewer offers USB redirection only where the VM's device policy allows it.
    usb = vm is not None and int(vm.usb_redirect) > 0
    return vv_response(grant, title=f"{grant.vm_name} · KVM-VDI", fullscreen=fullscreen, usb_redirect=usb)


routes: list[BaseRoute] = [
    Route("/vms/{vm_id:id}/console", admin_console_page, methods=["GET"], name="vm_console"),
    Route("/vms/{vm_id:id}/console", admin_open_console, methods=["POST"], name="vm_console_open"),
    Route("/vms/{vm_id:id}/console.vv", admin_console_vv, methods=["POST"], name="vm_console_vv"),
    WebSocketRoute(CONSOLE_WEBSOCKET_PREFIX + "{vm_id:id}", ConsoleSocket(), name="console_ws"),
]
