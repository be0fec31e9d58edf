"""Hypervisor pages: list, add, edit, remove, host-key confirmation, "Check now"."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api.describe import PAGE, REDIRECT, describe
from app.api.forms import HostKeyForm, HypervisorForm, NoFields, Toast
from app.hyper.records import HypervisorRecord
from app.hyper.sshkeys import HostKeyError
from app.i18n import gettext as _
from app.inventory import hypervisors as records
from app.inventory.service import Actor, HostKeyNotConfirmable, HypervisorInventory
from app.services import Services, services_of
from app.views.forms import client_address, redirect_with_toast, render
from app.views.guards import admin_required

TRANSPORT_CHOICES = [
    ("ssh", "SSH: a remote hypervisor, reached with the dashboard's key"),
    ("local", "Local: libvirt on this machine"),
    ("test", "Test: libvirt's simulated test driver (demos)"),
]


def inventory(services: Services) -> HypervisorInventory:
    return HypervisorInventory(
        db=services.db,
        audit=services.audit,
        hub=services.hub,
        registry=services.hypervisors,
        key=services.ssh_key,
        known_hosts=services.known_hosts,
    )


def reason_codes(services: Services, rows: list[HypervisorRecord]) -> dict[int, str]:
    """Why each hypervisor is not up, as the registry classified it (e.g. host_key_mismatch)."""
    codes = {}
    for row in rows:
        hv = services.hypervisors.find(row.id)
        if hv is not None and hv.reason_code:
            codes[row.id] = hv.reason_code
    return codes


def actor(request: Request) -> Actor:
    return Actor(username=request.state.user.username, client_address=client_address(request))


async def _row_or_404(request: Request) -> HypervisorRecord | None:
    row = await records.get(services_of(request).db, int(request.path_params["hypervisor_id"]))
    return row


def _not_found(request: Request) -> Response:
    return render(
        request,
        "errors/404.html",
        {"title": _("Not found"), "missing": _("There is no such hypervisor (any more).")},
        404,
    )


@admin_required
@describe("The hypervisors", query=Toast, responses={200: PAGE})
async def list_page(request: Request) -> Response:
    services = services_of(request)
    rows = await records.list_all(services.db)
    return render(
        request,
        "hypervisors/list.html",
        {
            "title": _("Hypervisors"),
            "active": "hypervisors",
            "rows": rows,
            "figures": {row.id: records.display_figures(row) for row in rows},
            "host_keys": {row.id: records.host_key_info(row) for row in rows},
            "codes": reason_codes(services, rows),
            "ssh_key": services.ssh_key,
        },
    )


@admin_required
@describe("One hypervisor's table row (for live updates)", responses={200: PAGE, 404: PAGE})
async def row_fragment(request: Request) -> Response:
    """One table row, for live insertion of a hypervisor added elsewhere."""
    row = await _row_or_404(request)
    if row is None:
        return _not_found(request)
    return render(
        request,
        "hypervisors/row.html",
        {
            "row": row,
            "figures": {row.id: records.display_figures(row)},
            "host_keys": {row.id: records.host_key_info(row)},
            "codes": reason_codes(services_of(request), [row]),
        },
    )


def _form_page(
    request: Request,
    *,
    values: dict[str, Any],
    errors: dict[str, str] | None = None,
    row: HypervisorRecord | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "hypervisors/form.html",
        {
            "title": _("Edit {name}").format(name=row.name) if row is not None else _("Add a hypervisor"),
            "active": "hypervisors",
            "values": values,
            "errors": errors or {},
            "labels": records.LABELS,
            "row": row,
            "transports": TRANSPORT_CHOICES,
            "ssh_key": services_of(request).ssh_key,
        },
        status_code=status_code,
    )


@admin_required
@describe("The add-a-hypervisor form", responses={200: PAGE})
async def new_page(request: Request) -> Response:
    return _form_page(request, values=records.form_values(None))


@admin_required
@describe("Add a hypervisor", form=HypervisorForm, responses={303: REDIRECT, 400: PAGE})
async def new_submit(request: Request) -> Response:
    services = services_of(request)
    form = await request.form()
    submitted = {field: form.get(field) for field in records.FIELDS}
    result = records.validate(submitted)
    await records.check_unique(services.db, result)
    if not result.ok:
        # The form comes back with everything as typed, errors next to their fields.
        return _form_page(request, values=records.as_typed(submitted), errors=result.errors, status_code=400)
    hypervisor_id = await inventory(services).add(result.values, actor(request))
    if result.values["transport"] == "ssh":
        return redirect_with_toast(
            f"/hypervisors/{hypervisor_id}/host-key",
            _("{name} added: confirm its host key.").format(name=result.values["name"]),
            "info",
        )
    return redirect_with_toast("/hypervisors", f"{result.values['name']} added.")


@admin_required
@describe("The edit form of a hypervisor", responses={200: PAGE, 404: PAGE})
async def edit_page(request: Request) -> Response:
    row = await _row_or_404(request)
    if row is None:
        return _not_found(request)
    return _form_page(request, values=records.form_values(row), row=row)


@admin_required
@describe("Change a hypervisor", form=HypervisorForm, responses={303: REDIRECT, 400: PAGE, 404: PAGE})
async def edit_submit(request: Request) -> Response:
    services = services_of(request)
    row = await _row_or_404(request)
    if row is None:
        return _not_found(request)
    form = await request.form()
    submitted = {field: form.get(field) for field in records.FIELDS}
    result = records.validate(submitted)
    await records.check_unique(services.db, result, exclude_id=row.id)
    if not result.ok:
        values = records.as_typed(submitted)
        return _form_page(request, values=values, errors=result.errors, row=row, status_code=400)
    unpinned = await inventory(services).edit(row, result.values, actor(request))
    name = result.values["name"]
    if unpinned or (result.values["transport"] == "ssh" and not row.host_key_confirmed):
        return redirect_with_toast(
            f"/hypervisors/{row.id}/host-key",
            _("{name} saved: confirm the host key of its SSH server.").format(name=name),
            "info",
        )
    return redirect_with_toast("/hypervisors", f"{name} saved.")


@admin_required
@describe("What removing the hypervisor does, to confirm", responses={200: PAGE, 404: PAGE})
async def remove_page(request: Request) -> Response:
    services = services_of(request)
    row = await _row_or_404(request)
    if row is None:
        return _not_found(request)
    vm_names = await records.vm_names_on(services.db, row.id)
    return render(
        request,
        "hypervisors/remove.html",
        {
            "title": _("Remove {name}").format(name=row.name),
            "active": "hypervisors",
            "row": row,
            "vm_names": vm_names,
        },
    )


@admin_required
@describe("Remove the hypervisor", form=NoFields, responses={303: REDIRECT, 404: PAGE, 409: PAGE})
async def remove_submit(request: Request) -> Response:
    services = services_of(request)
    row = await _row_or_404(request)
    if row is None:
        return _not_found(request)
    try:
        await inventory(services).remove(row, actor(request))
    except records.HypervisorInUse as exc:
        return render(
            request,
            "hypervisors/remove.html",
            {
                "title": _("Remove {name}").format(name=row.name),
                "active": "hypervisors",
                "row": row,
                "vm_names": exc.vm_names,
                "error": str(exc),
            },
            status_code=409,
        )
    return redirect_with_toast("/hypervisors", f"{row.name} removed.")


async def _host_key_page(
    request: Request, row: HypervisorRecord, *, error: str | None = None, status_code: int = 200
) -> Response:
    view = await inventory(services_of(request)).host_key_view(row)
    return render(
        request,
        "hypervisors/host_key.html",
        {
            "title": _("Host key of {name}").format(name=row.name),
            "active": "hypervisors",
            "row": row,
            "view": view,
            "error": error,
        },
        status_code=status_code,
    )


@admin_required
@describe("The host key to confirm", responses={200: PAGE, 303: REDIRECT, 404: PAGE})
async def host_key_page(request: Request) -> Response:
    row = await _row_or_404(request)
    if row is None:
        return _not_found(request)
    if row.transport != "ssh":
        return redirect_with_toast(
            "/hypervisors", _("{name} is not reached over SSH: no host key.").format(name=row.name), "info"
        )
    return await _host_key_page(request, row)


@admin_required
@describe(
    "Pin the host key",
    form=HostKeyForm,
    responses={303: REDIRECT, 200: PAGE, 400: PAGE, 404: PAGE, 409: PAGE},
)
async def host_key_submit(request: Request) -> Response:
    services = services_of(request)
    row = await _row_or_404(request)
    if row is None:
        return _not_found(request)
    if row.transport != "ssh":
        return redirect_with_toast(
            "/hypervisors", _("{name} is not reached over SSH: no host key.").format(name=row.name), "info"
        )
    form = await request.form()
    expected = str(form.get("fingerprint", ""))
    if form.get("verified") != "on":
        return await _host_key_page(
            request,
            row,
            error=_("Tick “I compared the fingerprints” once you have checked them on the hypervisor."),
            status_code=400,
        )
    try:
        pinned = await inventory(services).confirm_host_key(row, expected, actor(request))
    except (HostKeyNotConfirmable, HostKeyError) as exc:
        return await _host_key_page(request, row, error=str(exc), status_code=409)
    return redirect_with_toast(
        "/hypervisors", _("Host key {pinned} pinned for {name}.").format(pinned=pinned, name=row.name)
    )


@admin_required
@describe("Check the hypervisor now", form=NoFields, responses={303: REDIRECT, 404: PAGE})
async def check_submit(request: Request) -> Response:
    services = services_of(request)
    row = await _row_or_404(request)
    if row is None:
        return _not_found(request)
    outcome = await inventory(services).check(row, actor(request))
    return redirect_with_toast(
        "/hypervisors", outcome.summary(row.name), "success" if outcome.ok else "danger"
    )


routes = [
    Route("/hypervisors", list_page, methods=["GET"], name="hypervisors"),
    Route("/hypervisors/new", new_page, methods=["GET"], name="hypervisor_new"),
    Route("/hypervisors/new", new_submit, methods=["POST"]),
    Route("/hypervisors/{hypervisor_id:id}/row", row_fragment, methods=["GET"]),
    Route("/hypervisors/{hypervisor_id:id}/edit", edit_page, methods=["GET"], name="hypervisor_edit"),
    Route("/hypervisors/{hypervisor_id:id}/edit", edit_submit, methods=["POST"]),
    Route("/hypervisors/{hypervisor_id:id}/remove", remove_page, methods=["GET"], name="hypervisor_remove"),
    Route("/hypervisors/{hypervisor_id:id}/remove", remove_submit, methods=["POST"]),
    Route(
        "/hypervisors/{hypervisor_id:id}/host-key",
        host_key_page,
        methods=["GET"],
        name="hypervisor_host_key",
    ),
    Route("/hypervisors/{hypervisor_id:id}/host-key", host_key_submit, methods=["POST"]),
    Route("/hypervisors/{hypervisor_id:id}/check", check_submit, methods=["POST"], name="hypervisor_check"),
]
