"""Snapshots of persistent VMs for admins: the page ``/vms/{id}/snapshots`` and its JSON API.

``/api/v1/admin/vms/{id}/snapshots``: list, take (``{name?, description?}``), revert,
delete; each change is a short operation (``202 {operation}``) whose end is
announced as ``snapshot {vm_id, snapshots}`` on the live socket.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from app.api.bodies import SnapshotTake
from app.api.describe import PAGE, TEXT, describe
from app.api.image_models import SnapshotList
from app.api.out import answer
from app.api.reader import read_body
from app.api.responses import OperationAnswer
from app.i18n import gettext as _
from app.views.forms import client_address, render
from app.views.guards import admin_required
from app.views.vms_api import PREFIX, actor, api, operation_json, path_id, vm_service
from app.vms.errors import VmError
from app.vms.snapshots import check_snapshottable, snapshot_json


@admin_required
@describe("A VM's snapshots", responses={200: PAGE, 404: TEXT, 409: TEXT})
async def page(request: Request) -> Response:
    service = vm_service(request)
    try:
        vm = await service.ctx.vm(path_id(request))
        check_snapshottable(vm)
    except VmError as exc:
        return PlainTextResponse(exc.message, status_code=exc.status)
    base = f"{PREFIX}/vms/{vm.id}/snapshots"
    return render(
        request,
        "vms/snapshots.html",
        {
            "active": "vms",
            "title": _("Snapshots of {name}").format(name=vm.name),
            "vm": vm,
            "api": base,
            "limit": None,
        },
    )


@api
@describe(
    "A VM's snapshots",
    responses={200: SnapshotList},
)
async def listing(request: Request) -> Response:
    found = await vm_service(request).snapshots.of(path_id(request))
    return answer(SnapshotList.model_validate({"snapshots": [snapshot_json(snapshot) for snapshot in found]}))


@api
@describe("Take a snapshot of a VM (an operation)", body=SnapshotTake, responses={202: OperationAnswer})
async def take(request: Request) -> Response:
    body = await read_body(request, SnapshotTake)
    op_id = await vm_service(request).snapshots.take(
        path_id(request),
        body.name or None,
        body.description.strip(),
        actor=actor(request),
        client_address=client_address(request),
    )
    return JSONResponse({"operation": await operation_json(request, op_id)}, status_code=202)


async def _change(request: Request, verb: str) -> Response:
    snapshots = vm_service(request).snapshots
    change = snapshots.revert if verb == "revert" else snapshots.delete
    op_id = await change(
        path_id(request),
        request.path_params["name"],
        actor=actor(request),
        client_address=client_address(request),
    )
    return JSONResponse({"operation": await operation_json(request, op_id)}, status_code=202)


@api
@describe("Go back to a snapshot (an operation)", responses={202: OperationAnswer})
async def revert(request: Request) -> Response:
    return await _change(request, "revert")


@api
@describe("Delete a snapshot (an operation)", responses={202: OperationAnswer})
async def delete(request: Request) -> Response:
    return await _change(request, "delete")


BASE = f"{PREFIX}/vms/{{vm_id:id}}/snapshots"
routes = [
    Route("/vms/{vm_id:id}/snapshots", page, methods=["GET"]),
    Route(BASE, listing, methods=["GET"]),
    Route(BASE, take, methods=["POST"]),
    Route(f"{BASE}/{{name}}/revert", revert, methods=["POST"]),
    Route(f"{BASE}/{{name}}/delete", delete, methods=["POST"]),
    Route(f"{BASE}/{{name}}", delete, methods=["DELETE"]),
]
