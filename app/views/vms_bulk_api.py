"""The admin JSON API behind the VM table at fleet size: VMs matching a filter, actions on many
VMs (power, maintenance, delete with its confirmation plan) and the admin's own table view.

Filters are the VM page's query parameters (:class:`app.vms.listing.Listing`): ``q``,
``state``, ``pool``, ``hypervisor``, ``user``, ``flag``, ``kind``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.api.bodies import BulkDelete, BulkDeletePlan, BulkMaintenance, BulkPower, VmTableView
from app.api.describe import describe
from app.api.forms import VmListingQuery
from app.api.reader import read_body
from app.api.responses import (
    BulkDeleted,
    BulkPlanAnswer,
    OperationAnswer,
    VmIdList,
    VmList,
    VmTableViewAnswer,
)
from app.services import services_of
from app.views.forms import client_address
from app.views.vms_api import PREFIX, actor, api, operation_json, vm_service
from app.vms import bulk
from app.vms.listing import Listing, matching_ids
from app.vms.table import build_table
from app.vms.view_preferences import VmView, change_view, load_view


@api
@describe("Ids of every VM matching the VM table's filters", query=VmListingQuery, responses={200: VmIdList})
async def ids(request: Request) -> Response:
    """Ids of every VM matching the filters (the table's "select all matching")."""
    service = vm_service(request)
    table = await build_table(services_of(request).db, service.operations, service.thumbnails, service.agents)
    return JSONResponse({"ids": matching_ids(table, Listing.from_query(request.query_params))})


@api
@describe("Power action on many VMs (an operation)", body=BulkPower, responses={202: OperationAnswer})
async def power(request: Request) -> Response:
    body = await read_body(request, BulkPower)
    op_id = await bulk.start_bulk_power(
        vm_service(request).ctx, body.vm_ids, body.action, actor=actor(request)
    )
    return JSONResponse({"operation": await operation_json(request, op_id)}, status_code=202)


@api
@describe("Put many VMs into maintenance or take them out", body=BulkMaintenance, responses={200: VmList})
async def maintenance(request: Request) -> Response:
    body = await read_body(request, BulkMaintenance)
    changed = await bulk.set_bulk_maintenance(
        vm_service(request).ctx,
        body.vm_ids,
        body.maintenance,
        actor=actor(request),
        client_address=client_address(request),
    )
    return JSONResponse({"vms": [vm.summary() for vm in changed]})


@api
@describe(
    "What deleting many VMs would destroy, to confirm", body=BulkDeletePlan, responses={200: BulkPlanAnswer}
)
async def delete_plan(request: Request) -> Response:
    body = await read_body(request, BulkDeletePlan)
    plan = await bulk.plan_bulk_delete(vm_service(request).ctx, body.vm_ids, remove_disks=body.remove_disks)
    return JSONResponse({"plan": plan.summary()})


@api
@describe(
    "Delete many VMs (an operation), as confirmed",
    body=BulkDelete,
    responses={202: BulkDeleted},
    description="confirm_vms and confirm_files must be exactly the plan's (POST .../bulk/delete-plan).",
)
async def delete(request: Request) -> Response:
    body = await read_body(request, BulkDelete)
    plan, op_id = await bulk.start_bulk_delete(
        vm_service(request).ctx,
        body.vm_ids,
        remove_disks=body.remove_disks,
        confirmed_vms=body.confirm_vms,
        confirmed_files=body.confirm_files,
        actor=actor(request),
        client_address=client_address(request),
    )
    return JSONResponse({"deleted": plan.summary(), "operation": await operation_json(request, op_id)}, 202)


def _view(view: VmView) -> dict[str, object]:
    return {"collapsed": sorted(view.collapsed), "density": view.density, "per_page": view.per_page}


@api
@describe(
    "How you see the VM table: density, rows per page, folded machines", responses={200: VmTableViewAnswer}
)
async def table_view(request: Request) -> Response:
    """The signed-in admin's VM table: density, rows per page, collapsed initial machines."""
    return JSONResponse({"view": _view(await load_view(services_of(request).db, request.state.user.id))})


@api
@describe("Change how you see the VM table", body=VmTableView, responses={200: VmTableViewAnswer})
async def change_table_view(request: Request) -> Response:
    body = await read_body(request, VmTableView)
    view = await change_view(
        services_of(request).db,
        request.state.user.id,
        collapse=body.collapse,
        expand=body.expand,
        density=body.density,
        per_page=body.per_page,
    )
    return JSONResponse({"view": _view(view)})


routes = [
    Route(f"{PREFIX}/vms/ids", ids, methods=["GET"]),
    Route(f"{PREFIX}/vms/bulk/power", power, methods=["POST"]),
    Route(f"{PREFIX}/vms/bulk/maintenance", maintenance, methods=["POST"]),
    Route(f"{PREFIX}/vms/bulk/delete-plan", delete_plan, methods=["POST"]),
    Route(f"{PREFIX}/vms/bulk/delete", delete, methods=["POST"]),
    Route(f"{PREFIX}/me/vm-table", table_view, methods=["GET"]),
    Route(f"{PREFIX}/me/vm-table", change_table_view, methods=["PATCH"]),
]
