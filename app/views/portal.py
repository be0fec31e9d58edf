"""The client portal (``/client``): log-in, one tile per pool, connect, own-desktop power."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from app.api.bodies import DesktopRequest, UserPower
from app.api.describe import EMPTY, PAGE, REDIRECT, describe
from app.api.forms import NoFields, PortalLoginForm
from app.api.ids import parse_id
from app.api.reader import read_body
from app.api.responses import BrokerPools, ConsoleGrantBody, LeaseExpiry, PowerStarted
from app.auth.login import MAX_USERNAME, Refusal
from app.auth.session import end_session, start_session
from app.broker.catalog import straight_target
from app.broker.desktops import CONSOLE_PAGE
from app.broker.leases import active_lease, heartbeat_interval
from app.broker.pools import get_pool
from app.broker.power import DesktopPowerError
from app.broker.preferences import MOTD, get_preference
from app.db.records import LeaseRecord
from app.i18n import gettext as _
from app.proxy.service import ConsoleError, ConsoleGrant
from app.services import services_of
from app.views.api_broker import DESKTOP_ANSWERS, desktop_response, error
from app.views.consoles import (
    VV,
    console_page,
    cross_site_navigation,
    error_response,
    grant_response,
    vv_response,
)
from app.views.forms import client_address, log_in_from_form, record_action, render, with_retry_after
from app.views.guards import client_required, current_user
from app.views.language import settle_language
from app.vms.records import Vm, get_vm

# The query of the portal's first page after a log-in.
ARRIVED = "from=login"


async def _login_context(request: Request, **extra: Any) -> dict[str, Any]:
    services = services_of(request)
    return {
        "title": _("Log in"),
        "motd": await get_preference(services.db, MOTD),
        "directory_enabled": services.directory.enabled,
        **extra,
    }


@describe("The portal's log-in page", responses={200: PAGE, 303: REDIRECT})
async def login_page(request: Request) -> Response:
    user = await current_user(request)
    if user is not None and user.role == "client":
        return RedirectResponse("/client", status_code=303)
    return render(request, "portal/login.html", await _login_context(request))


@describe(
    "Log in to the portal",
    form=PortalLoginForm,
    responses={303: REDIRECT, 400: PAGE, 401: PAGE, 429: PAGE, 503: PAGE},
)
async def login_submit(request: Request) -> Response:
    services = services_of(request)
    form, outcome = await log_in_from_form(request, "portal")
    if isinstance(outcome, Refusal):
        username = str(form.get("username", "")).strip()[:MAX_USERNAME]
        context = await _login_context(
            request, username=username, realm=str(form.get("realm", "")), error=outcome.message
        )
        return with_retry_after(render(request, "portal/login.html", context, outcome.status), outcome)
    await start_session(request, outcome.user, services.sessions, groups=outcome.groups)
    services.broker.catalog.remember_groups(outcome.user.id, outcome.groups)
    # Only the page right after log-in may go straight to a desktop; the tiles stay one click away.
    return await settle_language(
        request, RedirectResponse(f"/client?{ARRIVED}", status_code=303), outcome.user.id
    )


@describe("Log out of the portal", form=NoFields, responses={303: REDIRECT})
async def logout(request: Request) -> Response:
    user = await current_user(request)
    if user is not None:
        await services_of(request).audit.record(
            "logout", actor=user.username, client_address=client_address(request), area="portal"
        )
    await end_session(request, services_of(request).sessions)
    return RedirectResponse("/client/login", status_code=303)


@client_required
@describe("The user's desktops", responses={200: PAGE})
async def home(request: Request) -> Response:
    services = services_of(request)
    user = request.state.user
    services.broker.catalog.remember_groups(user.id, user.groups)
    pools = await services.broker.catalog.pools_for(user.id, user.groups)
    arrived = request.url.query == ARRIVED
    straight = straight_target(pools) if arrived else None
    return render(
        request,
        "portal/index.html",
        {
            "title": _("My desktops"),
            "pools": pools,
            "straight": next((p for p in pools if p["id"] == straight), None),
        },
    )


@client_required
@describe("The user's pools (for the portal page)", responses={200: BrokerPools})
async def pools_json(request: Request) -> Response:
    user = request.state.user
    pools = await services_of(request).broker.catalog.pools_for(user.id, user.groups)
    return JSONResponse({"pools": pools, "straight_to": straight_target(pools)})


def _int(request: Request, name: str) -> int:
    found = parse_id(request.path_params.get(name))
    return -1 if found is None else found


@client_required
@describe("Get a desktop of the pool", body=DesktopRequest, body_required=False, responses=DESKTOP_ANSWERS)
async def request_desktop(request: Request) -> Response:
    services = services_of(request)
    user = request.state.user
    body = await read_body(request, DesktopRequest)
    answer = await services.broker.request_desktop(
        pool_id=_int(request, "pool_id"),
        user_id=user.id,
        username=user.username,
        groups=user.groups,
        client_address=client_address(request),
        another=body.new,
        with_connection=False,
    )
    if answer is None:
        return error(404, "pool_not_found", _("There is no such pool."))
    response = desktop_response(answer, services.broker)
    if answer.status == "ready" and answer.vm is not None:
        # The browser opens the console page; it asks for its own console ticket there.
        body = json.loads(bytes(response.body))
        body["console_url"] = CONSOLE_PAGE.format(vm_id=answer.vm.id)
        return JSONResponse(body)
    return response


async def _held_desktop(request: Request) -> tuple[Vm, LeaseRecord] | None:
    """(VM, lease) of the path's desktop if the user holds an active lease on it."""
    services = services_of(request)
    vm_id = _int(request, "vm_id")
    lease = await active_lease(services.db, vm_id, request.state.user.id)
    if lease is None:
        return None
    vm = await get_vm(services.db, vm_id)
    return (vm, lease) if vm is not None else None


async def _grant(request: Request) -> ConsoleGrant:
    return await services_of(request).broker.open_console(
        _int(request, "vm_id"),
        request.state.user.id,
        client_address=client_address(request),
        gateway_host=request.url.hostname,
    )


@client_required
@describe("The HTML5 console of the user's desktop", responses={200: PAGE, 403: PAGE})
async def console(request: Request) -> Response:
    """The HTML5 console of the user's own desktop; its heartbeats keep the lease."""
    held = await _held_desktop(request)
    if held is None:
        return render(
            request,
            "portal/gone.html",
            {
                "title": _("Desktop not yours"),
                "reason": _("This desktop is not (or no longer) assigned to you."),
            },
            status_code=403,
        )
    vm, lease = held
    pool = await get_pool(services_of(request).db, lease.pool_id) if lease.pool_id else None
    return console_page(
        request,
        vm_id=vm.id,
        vm_name=vm.name,
        open_url=f"/client/desktops/{vm.id}/console",
        vv_url=f"/client/desktops/{vm.id}/vv",
        back_url="/client",
        heartbeat_url=f"/client/desktops/{vm.id}/heartbeat",
        heartbeat_interval=heartbeat_interval(pool.lease_timeout_min if pool is not None else 5),
    )


@client_required
@describe(
    "A console ticket (HttpOnly cookie) and SPICE password for the console page",
    responses={200: ConsoleGrantBody},
)
async def open_console(request: Request) -> Response:
    """A console ticket (HttpOnly cookie) and SPICE password (JSON) for the console page."""
    # JSON only, and the CSRF token must come in the header (the middleware checked its value).
    if "x-csrf-token" not in request.headers:
        return error_response(
            "csrf_header_required", _("Send the CSRF token in the X-CSRF-Token header."), 403
        )
    try:
        grant = await _grant(request)
    except ConsoleError as exc:
        return error_response(exc.code, exc.message, exc.status)
    return grant_response(request, grant)


@client_required
@describe("A .vv file of the user's desktop for remote-viewer", form=NoFields, responses={200: VV})
async def download_vv(request: Request) -> Response:
    """A .vv file for remote-viewer (the portal's and the console page's forms): a fresh console
    ticket and SPICE password, so a POST (CSRF-checked), never a link another site could follow."""
    if cross_site_navigation(request):
        return error_response("cross_site", _("Open the console from the portal."), 403)
    try:
        grant = await _grant(request)
    except ConsoleError as exc:
        return error_response(exc.code, exc.message, exc.status)
    await record_action(request, "console_vv", target=grant.vm_name)
    vm = await get_vm(services_of(request).db, grant.vm_id)
    usb = vm is not None and vm.usb_redirect > 0
    return vv_response(grant, title=f"{grant.vm_name} · KVM-VDI", usb_redirect=usb)


@client_required
@describe("Power action on the user's desktop", body=UserPower, responses={202: PowerStarted})
async def power(request: Request) -> Response:
    services = services_of(request)
    action = (await read_body(request, UserPower)).action
    user = request.state.user
    try:
        state = await services.broker.user_power(
            _int(request, "vm_id"),
            user.id,
            action,
            actor=user.username,
            client_address=client_address(request),
        )
    except DesktopPowerError as exc:
        return error(
            409,
            "power_refused",
            _("'{action}' was not carried out: {message}.").format(action=action, message=exc.message),
        )
    if state is None:
        return error(403, "not_your_desktop", _("This desktop is not assigned to you."))
    return JSONResponse({"state": state}, status_code=202)


@client_required
@describe("Keep the lease of the desktop alive", responses={200: LeaseExpiry})
async def heartbeat(request: Request) -> Response:
    """Keeps the lease of an open desktop alive (portal page and console page call it)."""
    services = services_of(request)
    state, expires_at = await services.broker.leases.heartbeat_vm(
        _int(request, "vm_id"), request.state.user.id
    )
    if state != "ok" or expires_at is None:
        return error(
            410 if state == "ended" else 404,
            "lease_ended" if state == "ended" else "lease_not_found",
            _("You no longer hold this desktop."),
        )
    return JSONResponse({"expires_at": expires_at.isoformat() + "Z"})


@client_required
@describe("Give the desktop back", responses={204: EMPTY})
async def release(request: Request) -> Response:
    services = services_of(request)
    user = request.state.user
    released = await services.broker.leases.release(
        _int(request, "lease_id"),
        user_id=user.id,
        actor=user.username,
        client_address=client_address(request),
    )
    if not released:
        return error(404, "lease_not_found", _("There is no such lease."))
    return Response(status_code=204)


routes = [
    Route("/client/login", login_page, methods=["GET"], name="client_login"),
    Route("/client/login", login_submit, methods=["POST"]),
    Route("/client/logout", logout, methods=["POST"], name="client_logout"),
    Route("/client", home, methods=["GET"], name="client_home"),
    Route("/client/pools.json", pools_json, methods=["GET"]),
    Route("/client/pools/{pool_id}/desktop", request_desktop, methods=["POST"]),
    Route("/client/desktops/{vm_id}/vv", download_vv, methods=["POST"]),
    Route("/client/desktops/{vm_id}/console", console, methods=["GET"], name="client_console"),
    Route("/client/desktops/{vm_id}/console", open_console, methods=["POST"]),
    Route("/client/desktops/{vm_id}/power", power, methods=["POST"]),
    Route("/client/desktops/{vm_id}/heartbeat", heartbeat, methods=["POST"]),
    Route("/client/leases/{lease_id}/release", release, methods=["POST"]),
]
