"""The admin JSON API for VMs and operations: ``/api/v1/admin/vms`` (session cookie + CSRF header).

Bodies are the models of :mod:`app.api.bodies`, read by :mod:`app.api.reader`.
Errors are ``{"error": code, "message": text}``; invalid input adds ``"fields"``
mapping each bad field to what to do.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.api.bodies import (
    Classify,
    Delete,
    FixedAddress,
    Flags,
    Media,
    NewBatchBody,
    NewInitialBody,
    NewVdiBody,
    NewVmBody,
    Policy,
    Populate,
    StartConfirmed,
    VmPower,
    new_vm_model,
)
from app.api.describe import describe
from app.api.queries import DeleteQuery, OperationFilter, VmFilter
from app.api.reader import read_body, read_json, read_query, validate
from app.api.responses import (
    Deleted,
    DeletePlanAnswer,
    HypervisorOffers,
    ImageList,
    IsoList,
    OperationAnswer,
    OperationList,
    VmAnswer,
    VmChanged,
    VmInventory,
    VmList,
    VmPowered,
    VmsCreated,
)
from app.i18n import gettext as _
from app.services import services_of
from app.views.forms import client_address, json_error
from app.views.guards import admin_api
from app.vms.errors import Invalid, VmError
from app.vms.records import get_vm, list_vms
from app.vms.service import VmService
from app.vms.workflows_create import Created

Handler = Callable[[Request], Awaitable[Response]]


def vm_service(request: Request) -> VmService:
    service = services_of(request).vms
    if service is None:
        raise VmError(
            _("virtual machines are not available: the hypervisor registry is not running"), status=503
        )
    return service


def error_response(exc: VmError) -> JSONResponse:
    fields = exc.errors if isinstance(exc, Invalid) else None
    return json_error(exc.code, exc.message, exc.status, fields=fields, **exc.details)


def api(endpoint: Handler) -> Handler:
    """Admin only (token or session); VM errors become JSON answers."""

    @admin_api
    @functools.wraps(endpoint)
    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except VmError as exc:
            return error_response(exc)

    return wrapped


def path_id(request: Request, name: str = "vm_id") -> int:
    return int(request.path_params[name])


def actor(request: Request) -> str:
    return str(request.state.user.username)


async def operation_json(request: Request, op_id: int | None) -> dict[str, Any] | None:
    if op_id is None:
        return None
    operation = await vm_service(request).operations.get(op_id)
    return operation.summary() if operation else None


@api
@describe("VMs, by name", query=VmFilter, responses={200: VmInventory})
async def list_all(request: Request) -> Response:
    db = services_of(request).db
    vms = await list_vms(db, hypervisor_id=read_query(request, VmFilter).hypervisor_id)
    agents = vm_service(request).agents
    return JSONResponse({"vms": [{**vm.summary(), "guest": agents.summary_of(vm.id)} for vm in vms]})


@api
@describe("A VM, with its thumbnail version and current operation", responses={200: VmAnswer})
async def get_one(request: Request) -> Response:
    vm = await get_vm(services_of(request).db, path_id(request))
    if vm is None:
        return json_error("not_found", _("No such VM."), 404)
    service = vm_service(request)
    data = vm.summary()
    data["thumbnail"] = await service.thumbnails.version_of(vm.id)
    # What the guest's QEMU agent reports (OS name, IP addresses), or null without one.
    data["guest"] = service.agents.summary_of(vm.id)
    data["operation"] = await operation_json(request, vm.operation_id)
    return JSONResponse({"vm": data})


async def _created(request: Request, created: Created) -> Response:
    db = services_of(request).db
    vms = [vm.summary() for vm_id in created.vm_ids if (vm := await get_vm(db, vm_id)) is not None]
    status = 202 if created.operation_id is not None else 201
    return JSONResponse(
        {"vms": vms, "operation": await operation_json(request, created.operation_id)}, status
    )


@api
@describe(
    "Make a simple or source VM (name), or a batch (prefix and count)",
    body=(NewVmBody, NewBatchBody),
    responses={201: VmsCreated, 202: VmsCreated},
)
async def create(request: Request) -> Response:
    """A simple/source VM (``name``) or a batch (``prefix`` + ``count``)."""
    data = await read_json(request)
    created = await vm_service(request).create(validate(new_vm_model(data), data), actor=actor(request))
    return await _created(request, created)


@api
@describe(
    "Make an initial (golden image) VM from a source VM; its disk is copied by an operation",
    body=NewInitialBody,
    responses={201: VmsCreated, 202: VmsCreated},
)
async def create_initial(request: Request) -> Response:
    spec = await read_body(request, NewInitialBody)
    created = await vm_service(request).create_initial(spec, actor=actor(request))
    return await _created(request, created)


@api
@describe(
    "Make VDI machines on this initial VM", body=NewVdiBody, responses={201: VmsCreated, 202: VmsCreated}
)
async def create_vdi(request: Request) -> Response:
    spec = (await read_body(request, NewVdiBody)).on(path_id(request))
    created = await vm_service(request).create_vdi(spec, actor=actor(request))
    return await _created(request, created)


@api
@describe("Copy the source VM's disk to this initial VM (an operation)", responses={202: OperationAnswer})
async def copy_disk(request: Request) -> Response:
    op_id = await vm_service(request).copy_disk(path_id(request), actor=actor(request))
    return JSONResponse({"operation": await operation_json(request, op_id)}, status_code=202)


@api
@describe(
    "Recreate the children's overlays and start each once (an operation)",
    body=Populate,
    responses={202: OperationAnswer},
)
async def populate(request: Request) -> Response:
    """Recreate the children's overlays and start each once; ``wait_first_boot`` waits for the boots."""
    body = await read_body(request, Populate)
    op_id = await vm_service(request).populate(
        path_id(request),
        actor=actor(request),
        wait_first_boot=body.wait_first_boot,
        first_boot_timeout=body.first_boot_timeout,
    )
    return JSONResponse({"operation": await operation_json(request, op_id)}, status_code=202)


@api
@describe("Power action on the VM", body=VmPower, responses={202: VmPowered})
async def power(request: Request) -> Response:
    body = await read_body(request, StartConfirmed)
    vm = await vm_service(request).power(
        path_id(request),
        body.action,
        actor=actor(request),
        client_address=client_address(request),
        confirm_children=body.confirm_children,
    )
    return JSONResponse({"vm": vm.summary(), "action": body.action}, status_code=202)


@api
@describe(
    "Power action on every child of this initial VM (an operation)",
    body=VmPower,
    responses={202: OperationAnswer},
)
async def children_power(request: Request) -> Response:
    action = (await read_body(request, VmPower)).action
    op_id = await vm_service(request).mass_power(path_id(request), action, actor=actor(request))
    return JSONResponse({"operation": await operation_json(request, op_id)}, status_code=202)


@api
@describe("Set the VM's maintenance, locked or volatile flag", body=Flags, responses={200: VmChanged})
async def flags(request: Request) -> Response:
    changes = (await read_body(request, Flags)).changes()
    vm = await vm_service(request).set_flags(
        path_id(request), changes, actor=actor(request), client_address=client_address(request)
    )
    return JSONResponse({"vm": vm.summary()})


@api
@describe("Set a flag on every child of this initial VM", body=Flags, responses={200: VmList})
async def children_flags(request: Request) -> Response:
    changes = (await read_body(request, Flags)).changes()
    vms = await vm_service(request).set_children_flags(
        path_id(request), changes, actor=actor(request), client_address=client_address(request)
    )
    return JSONResponse({"vms": [vm.summary() for vm in vms]})


@api
@describe("Classify an adopted VM (kind and parent)", body=Classify, responses={200: VmChanged})
async def classify(request: Request) -> Response:
    body = await read_body(request, Classify)
    vm = await vm_service(request).classify(
        path_id(request),
        body.kind,
        body.parent_id,
        actor=actor(request),
        client_address=client_address(request),
    )
    return JSONResponse({"vm": vm.summary()})


@api
@describe("Insert an ISO image (iso_path) or eject (null)", body=Media, responses={200: VmChanged})
async def media(request: Request) -> Response:
    """Insert (``iso_path``) or eject (null) the medium of CD-ROM ``drive`` 1 (default) or 2."""
    body = await read_body(request, Media)
    iso, drive = body.iso_path, body.drive
    vm = await vm_service(request).change_media(
        path_id(request),
        iso or None,
        drive=drive,
        actor=actor(request),
        client_address=client_address(request),
    )
    return JSONResponse({"vm": vm.summary()})


@api
@describe("Set the device policy of a VM in no pool", body=Policy, responses={200: VmChanged})
async def policy(request: Request) -> Response:
    """A VM's device policy (in no pool): ``clipboard``, ``file_transfer`` (bool), ``usb_redirect`` (0-4)."""
    body = await read_body(request, Policy)
    vm = await vm_service(request).set_policy(
        path_id(request),
        body.changes(),
        actor=actor(request),
        client_address=client_address(request),
    )
    return JSONResponse({"vm": vm.summary()})


@api
@describe(
    "Give the VM a fixed IPv4 address in the DHCP export (null or empty removes it)",
    body=FixedAddress,
    responses={200: VmChanged},
)
async def fixed_address(request: Request) -> Response:
    """The VM's fixed IPv4 address in the DHCP export: ``fixed_address`` (null or "" removes it)."""
    body = await read_body(request, FixedAddress)
    vm = await vm_service(request).set_fixed_address(
        path_id(request), body.fixed_address, actor=actor(request), client_address=client_address(request)
    )
    return JSONResponse({"vm": vm.summary()})


@api
@describe(
    "What VMs on this hypervisor can have (UEFI, Secure Boot, TPM, CPU modes), and why not",
    responses={200: HypervisorOffers},
)
async def capabilities(request: Request) -> Response:
    """What VMs here can have (UEFI, Secure Boot, TPM, CPU modes), per domain type, and why not."""
    offers = await vm_service(request).offers(path_id(request, "hypervisor_id"))
    return JSONResponse(offers)


@api
@describe(
    "What a deletion would destroy: VM names and files, to confirm",
    query=DeleteQuery,
    responses={200: DeletePlanAnswer},
)
async def delete_plan(request: Request) -> Response:
    """What a deletion would destroy: VM names and file paths, for the confirmation."""
    query = read_query(request, DeleteQuery)
    plan = await vm_service(request).plan_delete(
        path_id(request), with_children=query.with_children, remove_disks=query.remove_disks
    )
    return JSONResponse({"plan": plan.summary()})


@api
@describe(
    "Delete the VM (and its children, and its disks, as confirmed)",
    body=Delete,
    responses={200: Deleted, 202: Deleted},
    description="confirm_vms and confirm_files must be exactly the plan's (GET .../delete-plan).",
)
async def delete(request: Request) -> Response:
    body = await read_body(request, Delete)
    plan, op_id = await vm_service(request).delete(
        path_id(request),
        with_children=body.with_children,
        remove_disks=body.remove_disks,
        confirmed_vms=body.confirm_vms,
        confirmed_files=body.confirm_files,
        actor=actor(request),
        client_address=client_address(request),
    )
    status = 202 if op_id is not None else 200
    return JSONResponse(
        {"deleted": plan.summary(), "operation": await operation_json(request, op_id)}, status
    )


@api
@describe("Recent operations, newest first", query=OperationFilter, responses={200: OperationList})
async def operations(request: Request) -> Response:
    active = read_query(request, OperationFilter).active
    found = await vm_service(request).operations.recent(limit=100, active_only=active)
    return JSONResponse({"operations": [op.summary() for op in found]})


@api
@describe("An operation and its progress", responses={200: OperationAnswer})
async def operation(request: Request) -> Response:
    found = await vm_service(request).operations.get(path_id(request, "op_id"))
    if found is None:
        return json_error("not_found", _("No such operation."), 404)
    return JSONResponse({"operation": found.summary()})


@api
@describe("The ISO images of the hypervisor's ISO directory", responses={200: IsoList})
async def isos(request: Request) -> Response:
    found = await vm_service(request).list_isos(path_id(request, "hypervisor_id"))
    return JSONResponse({"isos": [{"path": iso.path, "name": iso.name, "size": iso.size} for iso in found]})


@api
@describe("The images of the hypervisor's images directory a new VM may start on", responses={200: ImageList})
async def images(request: Request) -> Response:
    found = await vm_service(request).list_images(path_id(request, "hypervisor_id"))
    return JSONResponse({"images": [image.summary() for image in found]})


PREFIX = "/api/v1/admin"
routes = [
    Route(f"{PREFIX}/vms", list_all, methods=["GET"]),
    Route(f"{PREFIX}/vms", create, methods=["POST"]),
    Route(f"{PREFIX}/vms/initial", create_initial, methods=["POST"]),
    Route(f"{PREFIX}/vms/{{vm_id:id}}", get_one, methods=["GET"]),
    Route(f"{PREFIX}/vms/{{vm_id:id}}", delete, methods=["DELETE"]),
    Route(f"{PREFIX}/vms/{{vm_id:id}}/delete", delete, methods=["POST"]),
    Route(f"{PREFIX}/vms/{{vm_id:id}}/delete-plan", delete_plan, methods=["GET"]),
    Route(f"{PREFIX}/vms/{{vm_id:id}}/power", power, methods=["POST"]),
    Route(f"{PREFIX}/vms/{{vm_id:id}}/flags", flags, methods=["POST"]),
    Route(f"{PREFIX}/vms/{{vm_id:id}}/classify", classify, methods=["POST"]),
    Route(f"{PREFIX}/vms/{{vm_id:id}}/media", media, methods=["POST"]),
    Route(f"{PREFIX}/vms/{{vm_id:id}}/policy", policy, methods=["POST"]),
    Route(f"{PREFIX}/vms/{{vm_id:id}}/fixed-address", fixed_address, methods=["POST"]),
    Route(f"{PREFIX}/vms/{{vm_id:id}}/copy-disk", copy_disk, methods=["POST"]),
    Route(f"{PREFIX}/vms/{{vm_id:id}}/populate", populate, methods=["POST"]),
    Route(f"{PREFIX}/vms/{{vm_id:id}}/vdi", create_vdi, methods=["POST"]),
    Route(f"{PREFIX}/vms/{{vm_id:id}}/children/power", children_power, methods=["POST"]),
    Route(f"{PREFIX}/vms/{{vm_id:id}}/children/flags", children_flags, methods=["POST"]),
    Route(f"{PREFIX}/operations", operations, methods=["GET"]),
    Route(f"{PREFIX}/operations/{{op_id:id}}", operation, methods=["GET"]),
    Route(f"{PREFIX}/hypervisors/{{hypervisor_id:id}}/isos", isos, methods=["GET"]),
    Route(f"{PREFIX}/hypervisors/{{hypervisor_id:id}}/images", images, methods=["GET"]),
    Route(f"{PREFIX}/hypervisors/{{hypervisor_id:id}}/capabilities", capabilities, methods=["GET"]),
]
