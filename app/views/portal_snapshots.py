"""Snapshots of the user's own desktop in the client portal, where its pool offers them.

The page ``/client/desktops/{vm_id}/snapshots`` and its JSON calls (session cookie +
CSRF header): the list, take, revert, delete. Each answer waits for the short
operation (see :mod:`app.broker.snapshots`) and carries the fresh list.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api.bodies import SnapshotTake
from app.api.describe import PAGE, describe
from app.api.errors import ErrorBody
from app.api.ids import parse_id
from app.broker.snapshots import SnapshotRefused
from app.i18n import gettext as _
from app.services import services_of
from app.views import desktop_snapshots
from app.views.desktop_snapshots import SNAPSHOT_OUTCOMES, SNAPSHOTS
from app.views.forms import render
from app.views.guards import client_required
from app.vms.records import get_vm


def _vm_id(request: Request) -> int:
    found = parse_id(request.path_params["vm_id"])
    return -1 if found is None else found


@client_required
@describe("The snapshots of the user's own desktop", responses={200: PAGE, 404: PAGE})
async def page(request: Request) -> Response:
    services = services_of(request)
    vm_id = _vm_id(request)
    try:
        limit, _found = await services.broker.snapshots.of(vm_id, request.state.user.id)
    except SnapshotRefused as exc:
        if exc.code in ("snapshots_not_allowed", "snapshots_unavailable"):
            # Their own desktop, without snapshots: the page says so (and why).
            context = {"title": _("Snapshots"), "reason": exc.message}
            return render(request, "portal/no_snapshots.html", context)
        return render(
            request,
            "portal/gone.html",
            {"title": _("No snapshots here"), "reason": exc.message},
            status_code=exc.status,
        )
    vm = await get_vm(services.db, vm_id)
    assert vm is not None  # the user holds a lease on it
    return render(
        request,
        "portal/snapshots.html",
        {
            "title": _("Snapshots of {name}").format(name=vm.name),
            "vm": vm,
            "api": f"/client/desktops/{vm.id}/snapshots",
            "limit": limit,
        },
    )


@client_required
@describe("The snapshots of the user's own desktop", responses={200: SNAPSHOTS, 409: ErrorBody})
async def listing(request: Request) -> Response:
    return await desktop_snapshots.listing(request, _vm_id(request), request.state.user.id)


@client_required
@describe("Take a snapshot of the user's own desktop", body=SnapshotTake, responses=SNAPSHOT_OUTCOMES)
async def take(request: Request) -> Response:
    user = request.state.user
    return await desktop_snapshots.take(request, _vm_id(request), user.id, user.username)


@client_required
@describe("Go back to a snapshot of the user's own desktop", responses=SNAPSHOT_OUTCOMES)
async def revert(request: Request) -> Response:
    user = request.state.user
    return await desktop_snapshots.change(request, "revert", _vm_id(request), user.id, user.username)


@client_required
@describe("Delete a snapshot of the user's own desktop", responses=SNAPSHOT_OUTCOMES)
async def delete(request: Request) -> Response:
    user = request.state.user
    return await desktop_snapshots.change(request, "delete", _vm_id(request), user.id, user.username)


BASE = "/client/desktops/{vm_id}/snapshots"
routes = [
    Route(BASE, page, methods=["GET"]),
    Route(f"{BASE}.json", listing, methods=["GET"]),
    Route(BASE, take, methods=["POST"]),
    Route(f"{BASE}/{{name}}/revert", revert, methods=["POST"]),
    Route(f"{BASE}/{{name}}/delete", delete, methods=["POST"]),
]
