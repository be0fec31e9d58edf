"""The client portal (``/client``): log-in, one tile per pool, connect, own-desktop power."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from app.auth.session import client_required, current_user, end_session, start_session
from app.broker.clients import REALMS, RealmError, authenticate_client, resolve_realm
from app.broker.desktops import CONSOLE_PAGE, POWER_ACTIONS
from app.broker.leases import user_leases
from app.broker.pools import get_pool
from app.broker.preferences import MOTD, get_preference
from app.db.schema import pool_vms, vms
from app.directory import DirectoryError
from app.services import services_of
from app.views.api_broker import desktop_response, error
from app.views.forms import client_address, render


async def _login_context(request: Request, **extra: Any) -> dict[str, Any]:
    services = services_of(request)
    return {
        "title": "Log in",
        "motd": await get_preference(services.db, MOTD),
        "directory_enabled": services.directory.enabled,
        "realms": REALMS,
        **extra,
    }


async def login_page(request: Request) -> Response:
    user = await current_user(request)
    if user is not None and user.role == "client":
        return RedirectResponse("/client", status_code=303)
    return render(request, "portal/login.html", await _login_context(request))


async def login_submit(request: Request) -> Response:
    services = services_of(request)
    form = await request.form()
    username = str(form.get("username", "")).strip()
    password = str(form.get("password", ""))
    requested = str(form.get("realm", "")) or None
    address = client_address(request)
    context = await _login_context(request, username=username, realm=requested)

    def failed(message: str, status: int) -> Response:
        return render(request, "portal/login.html", {**context, "error": message}, status_code=status)

    wait = services.login_throttle.retry_after(username=username, address=address)
    if wait:
        await services.audit.record("login_throttled", actor=username, client_address=address, area="portal")
        response = failed(f"Too many failed attempts. Try again in {wait} seconds.", 429)
        response.headers["Retry-After"] = str(wait)
        return response
    try:
        realm = resolve_realm(requested, services.directory)
        found = await authenticate_client(services.db, services.directory, username, password, realm)
    except RealmError as exc:
        return failed(f"Account type: {exc}.", 400)
    except DirectoryError:
        return failed("The directory cannot be reached right now. Try again in a moment.", 503)
    if found is None:
        services.login_throttle.failed(username=username, address=address)
        await services.audit.record(
            "login_failed", actor=username, client_address=address, area="portal", realm=realm
        )
        return failed("Wrong user name or password.", 401)
    services.login_throttle.succeeded(username=username)
    start_session(request, found.user, groups=found.groups)
    services.broker.remember_groups(found.user.id, found.groups)
    await services.audit.record(
        "login", actor=found.user.username, client_address=address, area="portal", realm=realm
    )
    return RedirectResponse("/client", status_code=303)


async def logout(request: Request) -> Response:
    user = await current_user(request)
    if user is not None:
        await services_of(request).audit.record(
            "logout", actor=user.username, client_address=client_address(request), area="portal"
        )
    end_session(request)
    return RedirectResponse("/client/login", status_code=303)


@client_required
async def home(request: Request) -> Response:
    services = services_of(request)
    user = request.state.user
    services.broker.remember_groups(user.id, user.groups)
    pools = await services.broker.pools_for(user.id, user.groups)
    desktops = await user_leases(services.db, user.id)
    return render(
        request,
        "portal/index.html",
        {"title": "My desktops", "pools": pools, "desktops": desktops, "console_page": CONSOLE_PAGE},
    )


@client_required
async def pools_json(request: Request) -> Response:
    user = request.state.user
    return JSONResponse({"pools": await services_of(request).broker.pools_for(user.id, user.groups)})


def _int(request: Request, name: str) -> int:
    try:
        return int(request.path_params[name])
    except (KeyError, ValueError):
        return -1


@client_required
async def request_desktop(request: Request) -> Response:
    services = services_of(request)
    user = request.state.user
    answer = await services.broker.request_desktop(
        pool_id=_int(request, "pool_id"),
        user_id=user.id,
        username=user.username,
        groups=user.groups,
        client_address=client_address(request),
        with_connection=False,
    )
    if answer is None:
        return error(404, "pool_not_found", "There is no such pool.")
    response = desktop_response(answer, services.broker)
    if answer.status == "ready" and answer.vm is not None:
        # The browser opens the console page; it asks the console service for its own ticket.
        body = json.loads(bytes(response.body))
        body["console_url"] = CONSOLE_PAGE.format(vm_id=answer.vm.id)
        return JSONResponse(body)
    return response


async def _own_desktop(request: Request) -> Any | None:
    vm = await services_of(request).db.fetch_one(vms.select().where(vms.c.id == _int(request, "vm_id")))
    if vm is None or vm.assigned_user_id != request.state.user.id:
        return None
    return vm


@client_required
async def download_vv(request: Request) -> Response:
    """A .vv file for remote-viewer: a fresh console ticket and SPICE password, never stored."""
    services = services_of(request)
    vm = await _own_desktop(request)
    if vm is None:
        return error(403, "not_your_desktop", "This desktop is not assigned to you.")
    row = await services.db.fetch_one(pool_vms.select().where(pool_vms.c.vm_id == vm.id))
    pool = await get_pool(services.db, row.pool_id) if row is not None else None
    try:
        connection = await services.broker.connection(
            vm, pool, request.state.user.id, client_address(request)
        )
    except Exception as exc:
        return error(503, "console_unavailable", f"No console can be opened for {vm.name}: {exc}.")
    await services.audit.record(
        "console_vv",
        actor=request.state.user.username,
        target=vm.name,
        client_address=client_address(request),
    )
    return Response(
        connection["vv"],
        media_type="application/x-virt-viewer",
        headers={
            "Content-Disposition": f'attachment; filename="{vm.name}.vv"',
            "Cache-Control": "no-store",
        },
    )


@client_required
async def power(request: Request) -> Response:
    services = services_of(request)
    try:
        body = await request.json()
    except ValueError:
        body = {}
    action = body.get("action") if isinstance(body, dict) else None
    if action not in POWER_ACTIONS:
        return error(400, "invalid_request", "'action' must be one of: " + ", ".join(POWER_ACTIONS) + ".")
    user = request.state.user
    try:
        state = await services.broker.power(
            _int(request, "vm_id"),
            user.id,
            str(action),
            actor=user.username,
            client_address=client_address(request),
        )
    except Exception as exc:
        return error(503, "power_failed", f"The hypervisor did not carry out '{action}': {exc}.")
    if state is None:
        return error(403, "not_your_desktop", "This desktop is not assigned to you.")
    return JSONResponse({"state": state}, status_code=202)


@client_required
async def heartbeat(request: Request) -> Response:
    """Keeps the lease of an open desktop alive (portal page and console page call it)."""
    services = services_of(request)
    state, expires_at = await services.broker.heartbeat_vm(_int(request, "vm_id"), request.state.user.id)
    if state != "ok":
        return error(
            410 if state == "ended" else 404,
            "lease_ended" if state == "ended" else "lease_not_found",
            "You no longer hold this desktop.",
        )
    return JSONResponse({"expires_at": expires_at.isoformat() + "Z"})


@client_required
async def release(request: Request) -> Response:
    services = services_of(request)
    user = request.state.user
    released = await services.broker.release(
        _int(request, "lease_id"),
        user_id=user.id,
        actor=user.username,
        client_address=client_address(request),
    )
    if not released:
        return error(404, "lease_not_found", "There is no such lease.")
    return Response(status_code=204)


routes = [
    Route("/client/login", login_page, methods=["GET"], name="client_login"),
    Route("/client/login", login_submit, methods=["POST"]),
    Route("/client/logout", logout, methods=["POST"], name="client_logout"),
    Route("/client", home, methods=["GET"], name="client_home"),
    Route("/client/pools.json", pools_json, methods=["GET"]),
    Route("/client/pools/{pool_id}/desktop", request_desktop, methods=["POST"]),
    Route("/client/desktops/{vm_id}/vv", download_vv, methods=["POST"]),
    Route("/client/desktops/{vm_id}/power", power, methods=["POST"]),
    Route("/client/desktops/{vm_id}/heartbeat", heartbeat, methods=["POST"]),
    Route("/client/leases/{lease_id}/release", release, methods=["POST"]),
]
