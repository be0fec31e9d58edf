"""The VM pages: the live table, its row fragments and thumbnails, the create forms."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api.describe import EMPTY, PAGE, PNG, REDIRECT, Media, describe
from app.api.forms import (
    NewInitialForm,
    NewInitialQuery,
    NewVdiForm,
    NewVdiQuery,
    NewVmForm,
    NewVmQuery,
    RowsQuery,
    ThumbnailQuery,
    VmListingQuery,
)
from app.broker.pools import list_pools
from app.hyper import DiskFile
from app.i18n import gettext as _
from app.i18n import ngettext
from app.services import services_of
from app.views.forms import redirect_with_toast, render
from app.views.guards import admin_required
from app.views.vms_api import vm_service
from app.vms.errors import Invalid, VmError
from app.vms.importing import ImageChoice
from app.vms.listing import FILTER_CHOICES, Listing, arrange, rows_by_id
from app.vms.power import LABELS as POWER_LABELS
from app.vms.records import list_hypervisors, list_vms
from app.vms.service import VmService
from app.vms.table import build_table
from app.vms.view_preferences import load_view

# Rows one request of the live page may ask for.
MAX_ROWS = 500
BOOT_DEVICES = (("hd", "Disk"), ("cdrom", "CD-ROM 1"), ("cdrom2", "CD-ROM 2"), ("network", "Network (PXE)"))
CHOICES = {
    "machine": (("pc", "pc (i440FX)"), ("q35", "q35 (PCIe; needed for Secure Boot)")),
    "firmware": (("bios", "BIOS (SeaBIOS)"), ("uefi", "UEFI (OVMF)")),
    "cpu_mode": (
        ("default", "Default model (migratable)"),
        ("host-model", "Host model"),
        ("host-passthrough", "Host passthrough (nested virtualisation)"),
    ),
    "disk_bus": (
        ("virtio", "virtio (fastest; Windows needs the driver)"),
        ("sata", "SATA"),
        ("scsi", "SCSI (virtio-scsi)"),
    ),
    "disk_cache": (
        ("default", "Hypervisor default"),
        ("none", "none (direct I/O)"),
        ("writeback", "writeback"),
        ("writethrough", "writethrough"),
        ("directsync", "directsync"),
        ("unsafe", "unsafe (no flushes)"),
    ),
    "nic_model": (("virtio", "virtio"), ("e1000e", "e1000e (no driver needed)")),
    "network_type": (("bridge", "Host bridge"), ("network", "libvirt network")),
    "sound_model": (
        ("none", "None"),
        ("ich9", "Intel HDA (ich9)"),
        ("ich6", "Intel HDA (ich6)"),
        ("ac97", "AC97"),
    ),
}


async def _table_page(request: Request, service: VmService) -> dict[str, Any]:
    """The table, the admin's view of it and the page their query asks for."""
    db = services_of(request).db
    table = await build_table(db, service.operations, service.thumbnails, service.agents)
    view = await load_view(db, request.state.user.id)
    listing = Listing.from_query(request.query_params)
    page = arrange(table, listing, collapsed=view.collapsed, per_page=view.per_page)
    return {"table": table, "view": view, "page": page}


@admin_required
@describe("The VM table", query=VmListingQuery, responses={200: PAGE, 503: PAGE})
async def index(request: Request) -> Response:
    services = services_of(request)
    service = services.vms
    if service is None:
        return render(request, "vms/unavailable.html", {"active": "vms", "title": _("Virtual machines")}, 503)
    context = await _table_page(request, service)
    return render(
        request,
        "vms/index.html",
        {
            "active": "vms",
            "title": _("Virtual machines"),
            **context,
            "pools": await list_pools(services.db),
            "filters": FILTER_CHOICES,
            "power_labels": POWER_LABELS,
            "first_boot_timeout": services.settings.vms.first_boot_timeout,
        },
    )


@admin_required
@describe("The VM table's body (for live updates)", query=VmListingQuery, responses={200: PAGE})
async def table_fragment(request: Request) -> Response:
    """The table for the page's query (filters, sorting, page), for the live page."""
    return render(request, "vms/_table.html", await _table_page(request, vm_service(request)))


@admin_required
@describe("Table rows of some VMs (for live updates)", query=RowsQuery, responses={200: PAGE})
async def rows_fragment(request: Request) -> Response:
    """Rows of the VMs ``?ids=1,2,3`` that still exist (a live page refreshes many rows at once)."""
    wanted = [
        int(part) for part in request.query_params.get("ids", "").split(",")[:MAX_ROWS] if part.isdigit()
    ]
    services = services_of(request)
    service = vm_service(request)
    table = await build_table(services.db, service.operations, service.thumbnails, service.agents)
    view = await load_view(services.db, request.state.user.id)
    found = rows_by_id(table)
    rows = [(found[vm_id][0], found[vm_id][1]) for vm_id in wanted if vm_id in found]
    return render(request, "vms/_rows.html", {"rows": rows, "view": view})


@admin_required
@describe("The VM's latest screenshot", query=ThumbnailQuery, responses={200: PNG, 404: EMPTY})
async def thumbnail(request: Request) -> Response:
    service = vm_service(request)
    found = await service.thumbnails.get(int(request.path_params["vm_id"]))
    if found is None:
        return Response(status_code=404)
    # The URL carries the version (?v=N): a given URL never changes, so browsers may keep it.
    return Response(found.png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})


@admin_required
@describe(
    "The picture shown for a running VM whose screen cannot be had",
    responses={200: Media("image/svg+xml", "the picture, in the reader's language")},
)
async def no_screen(request: Request) -> Response:
    """The picture a running VM shows while none can be had, its words in the reader's language."""
    templates = request.app.state.templates
    response: Response = templates.TemplateResponse(
        request,
        "vms/no_screen.svg.html",
        {},
        media_type="image/svg+xml",
        headers={"Vary": "Cookie, Accept-Language"},
    )
    return response


# -- create forms ------------------------------------------------------------------------------


HARDWARE_FIELDS = (
    "vcpu_sockets",
    "vcpu_cores",
    "memory_mib",
    "disk_size_gib",
    "os_type",
    "network",
    "network_type",
    "nic_model",
    "iso_path",
    "iso2_path",
    "machine",
    "firmware",
    "cpu_mode",
    "disk_bus",
    "disk_cache",
    "sound_model",
    "video_heads",
    "usb_redirect",
)
HARDWARE_FLAGS = ("secure_boot", "tpm", "clipboard", "file_transfer")
BOOT_SLOTS = 4


def _hardware_from(form: FormData) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key in HARDWARE_FIELDS:
        if key in form:
            data[key] = str(form.get(key, ""))
    for flag in HARDWARE_FLAGS:
        data[flag] = form.get(flag) in ("on", "1", "true")
    boot = [str(form.get(f"boot_{index}", "")) for index in range(1, BOOT_SLOTS + 1)]
    data["boot_order"] = [device for device in boot if device]
    return data


async def _form_context(request: Request, form: FormData | None = None) -> dict[str, Any]:
    db = services_of(request).db
    hypervisors = await list_hypervisors(db)
    vms = await list_vms(db)
    values = {key: str(value) for key, value in (form or {}).items() if key != "csrf_token"}
    return {
        "active": "vms",
        "hypervisors": hypervisors,
        "sources": [vm for vm in vms if vm.kind == "source"],
        "initials": [vm for vm in vms if vm.kind == "initial"],
        "boot_devices": BOOT_DEVICES,
        "boot_slots": BOOT_SLOTS,
        "choices": CHOICES,
        "values": values,
        "errors": {},
    }


async def _images_for(request: Request, hypervisor_id: int | None) -> tuple[list[ImageChoice], str | None]:
    if hypervisor_id is None:
        return [], None
    try:
        return await vm_service(request).list_images(hypervisor_id), None
    except VmError as exc:
        return [], exc.message


async def _isos_for(request: Request, hypervisor_id: int | None) -> tuple[list[DiskFile], str | None]:
    if hypervisor_id is None:
        return [], None
    try:
        return await vm_service(request).list_isos(hypervisor_id), None
    except VmError as exc:
        return [], exc.message


@admin_required
@describe("The new-VM form", query=NewVmQuery, responses={200: PAGE})
async def new_vm(request: Request) -> Response:
    context = await _form_context(request)
    hypervisors = context["hypervisors"]
    wanted = request.query_params.get("hypervisor_id")
    selected = int(wanted) if wanted and wanted.isdigit() else (hypervisors[0].id if hypervisors else None)
    context["isos"], context["iso_error"] = await _isos_for(request, selected)
    context["images"], context["image_error"] = await _images_for(request, selected)
    batch = request.query_params.get("mode") == "batch"
    context["values"] = {
        "mode": "batch" if batch else "single",
        "kind": request.query_params.get("kind", "simple"),
        "hypervisor_id": str(selected or ""),
        "vcpu_sockets": "1",
        "vcpu_cores": "1",
        "memory_mib": "1024",
        "disk_size_gib": "20",
        "count": "2",
        "boot_1": "hd",
        "os_type": "linux",
        "machine": "pc",
        "firmware": "bios",
        "cpu_mode": "default",
        "disk_bus": "virtio",
        "disk_cache": "default",
        "nic_model": "virtio",
        "network_type": "bridge",
        "sound_model": "none",
        "video_heads": "1",
        "usb_redirect": "0",
    }
    return render(request, "vms/new.html", {**context, "title": _("New virtual machine")})


@admin_required
@describe("Make a VM or a batch", form=NewVmForm, responses={303: REDIRECT, 400: PAGE, 409: PAGE})
async def new_vm_submit(request: Request) -> Response:
    form = await request.form()
    batch = form.get("mode") == "batch"
    data = _hardware_from(form)
    data["kind"] = str(form.get("kind", "simple"))
    data["hypervisor_id"] = str(form.get("hypervisor_id", ""))
    if batch:
        data["prefix"] = str(form.get("prefix", ""))
        data["count"] = str(form.get("count", ""))
    else:
        data["name"] = str(form.get("name", ""))
        data["disk_path"] = str(form.get("disk_path", ""))
        data["import_path"] = str(form.get("import_path", ""))
        data["import_copy"] = form.get("import_copy") in ("on", "1", "true")
    try:
        created = await vm_service(request).create(data, actor=request.state.user.username)
    except VmError as exc:
        context = await _form_context(request, form)
        hv = data["hypervisor_id"]
        hv_id = int(hv) if hv.isdigit() else None
        context["isos"], context["iso_error"] = await _isos_for(request, hv_id)
        context["images"], context["image_error"] = await _images_for(request, hv_id)
        context["errors"] = _field_errors(exc)
        return render(request, "vms/new.html", {**context, "title": _("New virtual machine")}, exc.status)
    if batch:
        count = len(created.vm_ids)
        what = ngettext("Creating {count} VM", "Creating {count} VMs", count).format(count=count)
    elif created.operation_id is not None:
        what = _("Creating {name}: copying its image").format(name=data["name"])
    else:
        what = _("Created {name}").format(name=data["name"])
    return redirect_with_toast("/vms", what)


@admin_required
@describe("The new-initial-VM form", query=NewInitialQuery, responses={200: PAGE})
async def new_initial(request: Request) -> Response:
    context = await _form_context(request)
    source = request.query_params.get("source_id", "")
    context["values"] = {"source_id": source}
    return render(request, "vms/new_initial.html", {**context, "title": _("New initial machine")})


@admin_required
@describe(
    "Make an initial VM from a source", form=NewInitialForm, responses={303: REDIRECT, 400: PAGE, 409: PAGE}
)
async def new_initial_submit(request: Request) -> Response:
    form = await request.form()
    data: dict[str, Any] = {"name": str(form.get("name", "")), "source_id": str(form.get("source_id", ""))}
    for key in ("memory_mib", "vcpu_sockets", "vcpu_cores"):
        value = str(form.get(key, "")).strip()
        if value:
            data[key] = value
    try:
        await vm_service(request).create_initial(data, actor=request.state.user.username)
    except VmError as exc:
        context = await _form_context(request, form)
        context["errors"] = _field_errors(exc)
        return render(
            request, "vms/new_initial.html", {**context, "title": _("New initial machine")}, exc.status
        )
    return redirect_with_toast(
        "/vms", _("Copying the disk of the source to {name}").format(name=data["name"])
    )


@admin_required
@describe("The new-VDI-machines form", query=NewVdiQuery, responses={200: PAGE})
async def new_vdi(request: Request) -> Response:
    context = await _form_context(request)
    context["values"] = {"initial_id": request.query_params.get("initial_id", ""), "count": "3"}
    return render(request, "vms/new_vdi.html", {**context, "title": _("New VDI machines")})


@admin_required
@describe("Make VDI machines", form=NewVdiForm, responses={303: REDIRECT, 400: PAGE, 409: PAGE})
async def new_vdi_submit(request: Request) -> Response:
    form = await request.form()
    data = {
        "initial_id": str(form.get("initial_id", "")),
        "prefix": str(form.get("prefix", "")),
        "count": str(form.get("count", "")),
        "volatile": form.get("volatile") == "on",
    }
    try:
        created = await vm_service(request).create_vdi(data, actor=request.state.user.username)
    except VmError as exc:
        context = await _form_context(request, form)
        context["errors"] = _field_errors(exc)
        return render(request, "vms/new_vdi.html", {**context, "title": _("New VDI machines")}, exc.status)
    count = len(created.vm_ids)
    return redirect_with_toast(
        "/vms",
        ngettext("Creating {count} VDI machine", "Creating {count} VDI machines", count).format(count=count),
    )


def _field_errors(exc: VmError) -> dict[str, str]:
    if isinstance(exc, Invalid):
        return dict(exc.errors)
    return {"form": exc.message}


routes = [
    Route("/vms", index, methods=["GET"], name="vms"),
    Route("/vms/table", table_fragment, methods=["GET"]),
    Route("/vms/new", new_vm, methods=["GET"], name="vm_new"),
    Route("/vms/new", new_vm_submit, methods=["POST"]),
    Route("/vms/new-initial", new_initial, methods=["GET"], name="vm_new_initial"),
    Route("/vms/new-initial", new_initial_submit, methods=["POST"]),
    Route("/vms/new-vdi", new_vdi, methods=["GET"], name="vm_new_vdi"),
    Route("/vms/new-vdi", new_vdi_submit, methods=["POST"]),
    Route("/vms/rows", rows_fragment, methods=["GET"]),
    Route("/vms/{vm_id:id}/thumbnail.png", thumbnail, methods=["GET"]),
    Route("/vms/no-screen.svg", no_screen, methods=["GET"]),
]
