"""The DHCP export: ISC dhcpd ``host`` entries of the VMs, and each VM's fixed address."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from app.api.describe import PAGE, REDIRECT, TEXT, describe
from app.api.forms import FixedAddressForm, Toast
from app.i18n import gettext as _
from app.services import services_of
from app.views.forms import client_address, redirect_with_toast, render
from app.views.guards import admin_required
from app.views.vms_api import vm_service
from app.vms.dhcp import dhcp_hosts, dhcpd_config
from app.vms.errors import Invalid, VmError
from app.vms.records import list_vms


async def _page(request: Request, *, errors: dict[int, str] | None = None, status: int = 200) -> Response:
    vms = await list_vms(services_of(request).db)
    return render(
        request,
        "vms/dhcp.html",
        {
            "active": "vms",
            "title": _("DHCP export"),
            "hosts": dhcp_hosts(vms),
            "config": dhcpd_config(vms),
            "without_network": [vm for vm in vms if not vm.network],
            "errors": errors or {},
        },
        status,
    )


@admin_required
@describe("The DHCP export page, with each VM's fixed address", query=Toast, responses={200: PAGE})
async def dhcp_page(request: Request) -> Response:
    return await _page(request)


@admin_required
@describe("The DHCP host entries of every VM (ISC dhcpd)", responses={200: TEXT})
async def dhcp_download(request: Request) -> Response:
    config = dhcpd_config(await list_vms(services_of(request).db))
    return PlainTextResponse(
        config,
        headers={"Content-Disposition": 'attachment; filename="kvm-vdi-hosts.conf"'},
    )


@admin_required
@describe(
    "Give a VM a fixed IPv4 address (empty removes it)",
    form=FixedAddressForm,
    responses={303: REDIRECT, 400: PAGE, 404: PAGE, 409: PAGE},
)
async def fixed_address_submit(request: Request) -> Response:
    vm_id = int(request.path_params["vm_id"])
    form = await request.form()
    address = str(form.get("fixed_address", ""))
    try:
        vm = await vm_service(request).set_fixed_address(
            vm_id, address, actor=str(request.state.user.username), client_address=client_address(request)
        )
    except VmError as exc:
        message = "; ".join(exc.errors.values()) if isinstance(exc, Invalid) else exc.message
        return await _page(request, errors={vm_id: message}, status=exc.status)
    if vm.fixed_address:
        done = _("{vm} gets {address}").format(vm=vm.name, address=vm.fixed_address)
    else:
        done = _("{vm} has no fixed address").format(vm=vm.name)
    return redirect_with_toast("/vms/dhcp", done)


routes = [
    Route("/vms/dhcp", dhcp_page, methods=["GET"], name="vm_dhcp"),
    Route("/vms/dhcp.conf", dhcp_download, methods=["GET"]),
    Route("/vms/{vm_id:id}/fixed-address", fixed_address_submit, methods=["POST"]),
]
