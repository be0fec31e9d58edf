"""The hypervisor JSON API for automation: ``/api/v1/admin/hypervisors``.

Authenticated by an administrator's personal token, or the admin session (unsafe methods
then need the ``X-CSRF-Token`` header): :func:`app.api.guard.admin_api`. Bodies are the
models of :mod:`app.api.bodies`, read by :mod:`app.api.reader`; answers are the models of
:mod:`app.api.responses`. Errors are the one error model (:mod:`app.api.errors`).
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.api.bodies import HostKeyConfirmation, HypervisorFields
from app.api.describe import EMPTY, describe
from app.api.reader import read_body
from app.api.responses import CheckOutcome, HostKeyView, Hypervisor, HypervisorList
from app.hyper.records import HypervisorRecord
from app.hyper.sshkeys import HostKeyError
from app.i18n import gettext as _
from app.inventory import hypervisors as records
from app.inventory.service import HostKeyNotConfirmable
from app.services import services_of
from app.views.forms import json_error
from app.views.guards import admin_api
from app.views.hypervisors import actor, inventory

PREFIX = "/api/v1/admin/hypervisors"


def _invalid(errors: dict[str, str]) -> Response:
    return json_error("invalid", " ".join(errors.values()), 400, fields=errors)


async def _row(request: Request) -> HypervisorRecord | None:
    return await records.get(services_of(request).db, int(request.path_params["hypervisor_id"]))


async def _current(request: Request, hypervisor_id: int) -> dict[str, Any]:
    """The hypervisor as stored now (404 when it was removed meanwhile)."""
    row = await records.get(services_of(request).db, hypervisor_id)
    if row is None:
        raise HTTPException(404)
    return _record(request, row)


def _record(request: Request, row: HypervisorRecord) -> dict[str, Any]:
    hv = services_of(request).hypervisors.find(row.id)
    return records.as_json(row, hv.status() if hv is not None else None)


def _missing(request: Request) -> Response:
    return json_error(
        "not_found",
        _("No hypervisor with id {hypervisor_id}.").format(
            hypervisor_id=request.path_params["hypervisor_id"]
        ),
        404,
    )


@admin_api
@describe("Every hypervisor", responses={200: HypervisorList})
async def list_hypervisors(request: Request) -> Response:
    rows = await records.list_all(services_of(request).db)
    return JSONResponse({"hypervisors": [_record(request, row) for row in rows]})


@admin_api
@describe(
    "Add a hypervisor",
    body=HypervisorFields,
    responses={201: Hypervisor},
    description="The record is checked as the form checks it; an SSH hypervisor's host key then "
    "awaits confirmation (GET and POST .../host-key).",
)
async def create_hypervisor(request: Request) -> Response:
    services = services_of(request)
    body = await read_body(request, HypervisorFields)
    result = records.validate(body.sent())
    result.errors.update(body.refusals(result.values["transport"]))
    await records.check_unique(services.db, result)
    if not result.ok:
        return _invalid(result.errors)
    hypervisor_id = await inventory(services).add(result.values, actor(request))
    return JSONResponse(
        await _current(request, hypervisor_id),
        status_code=201,
        headers={"Location": f"{PREFIX}/{hypervisor_id}"},
    )


@admin_api
@describe("A hypervisor", responses={200: Hypervisor})
async def get_hypervisor(request: Request) -> Response:
    row = await _row(request)
    if row is None:
        return _missing(request)
    return JSONResponse(_record(request, row))


@admin_api
@describe("Change a hypervisor (only the fields sent)", body=HypervisorFields, responses={200: Hypervisor})
async def patch_hypervisor(request: Request) -> Response:
    services = services_of(request)
    row = await _row(request)
    if row is None:
        return _missing(request)
    body = await read_body(request, HypervisorFields)
    result = records.validate({**records.form_values(row), **body.sent()})
    result.errors.update(body.refusals(result.values["transport"]))
    await records.check_unique(services.db, result, exclude_id=row.id)
    if not result.ok:
        return _invalid(result.errors)
    await inventory(services).edit(row, result.values, actor(request))
    return JSONResponse(await _current(request, row.id))


@admin_api
@describe(
    "Remove a hypervisor",
    responses={204: EMPTY},
    description="409 hypervisor_in_use (vms names them) while VMs of the dashboard are defined there.",
)
async def delete_hypervisor(request: Request) -> Response:
    services = services_of(request)
    row = await _row(request)
    if row is None:
        return _missing(request)
    try:
        await inventory(services).remove(row, actor(request))
    except records.HypervisorInUse as exc:
        return json_error("hypervisor_in_use", str(exc), 409, vms=exc.vm_names)
    return Response(status_code=204)


@admin_api
@describe("The host key the hypervisor presents, beside the pinned one", responses={200: HostKeyView})
async def get_host_key(request: Request) -> Response:
    row = await _row(request)
    if row is None:
        return _missing(request)
    if row.transport != "ssh":
        return json_error("no_host_key", _("{name} is not reached over SSH.").format(name=row.name), 409)
    view = await inventory(services_of(request)).host_key_view(row)
    return JSONResponse(
        {
            "presented": {"key": view.presented, "fingerprint": view.presented_fingerprint}
            if view.presented
            else None,
            "pinned": records.host_key_info(row),
            "changed": view.changed,
            "error": view.error,
        }
    )


@admin_api
@describe(
    "Pin the presented host key",
    body=HostKeyConfirmation,
    responses={200: Hypervisor},
    description="The body names the fingerprint verified out of band; 409 host_key_mismatch otherwise.",
)
async def confirm_host_key(request: Request) -> Response:
    """Pin the presented key; the body names the fingerprint the caller verified out of band."""
    services = services_of(request)
    row = await _row(request)
    if row is None:
        return _missing(request)
    expected = (await read_body(request, HostKeyConfirmation)).fingerprint
    if row.transport != "ssh":
        return json_error("no_host_key", _("{name} is not reached over SSH.").format(name=row.name), 409)
    try:
        await inventory(services).confirm_host_key(row, expected, actor(request))
    except HostKeyNotConfirmable as exc:
        return json_error("host_key_mismatch", str(exc), 409)
    except HostKeyError as exc:
        return json_error("unreachable", str(exc), 502)
    return JSONResponse(await _current(request, row.id))


@admin_api
@describe("Check the hypervisor now (connection, libvirt, directories)", responses={200: CheckOutcome})
async def check_hypervisor(request: Request) -> Response:
    services = services_of(request)
    row = await _row(request)
    if row is None:
        return _missing(request)
    outcome = await inventory(services).check(row, actor(request))
    return JSONResponse(
        {
            "ok": outcome.ok,
            "reason": outcome.reason,
            "figures": outcome.figures,
            "message": outcome.summary(row.name),
            "hypervisor": await _current(request, row.id),
        }
    )


routes = [
    Route(PREFIX, list_hypervisors, methods=["GET"]),
    Route(PREFIX, create_hypervisor, methods=["POST"]),
    Route(PREFIX + "/{hypervisor_id:id}", get_hypervisor, methods=["GET"]),
    Route(PREFIX + "/{hypervisor_id:id}", patch_hypervisor, methods=["PATCH"]),
    Route(PREFIX + "/{hypervisor_id:id}", delete_hypervisor, methods=["DELETE"]),
    Route(PREFIX + "/{hypervisor_id:id}/host-key", get_host_key, methods=["GET"]),
    Route(PREFIX + "/{hypervisor_id:id}/host-key", confirm_host_key, methods=["POST"]),
    Route(PREFIX + "/{hypervisor_id:id}/check", check_hypervisor, methods=["POST"]),
]
