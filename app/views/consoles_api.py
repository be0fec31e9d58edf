"""A VM's console through the admin API: ``POST /api/v1/admin/vms/{id}/console`` opens it as the
console page does (a fresh ticket, the SPICE password set on the display, audited) and answers the
connection as the broker API gives a client its desktop, ``.vv`` file included. Secrets travel in
the answer's body only, never in a URL; a read-only token may not (it sets a SPICE password)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api.admin_models import AdminConsole
from app.api.describe import describe
from app.api.errors import ApiError
from app.api.out import answer
from app.api.responses import Connection
from app.proxy.service import ConsoleError
from app.proxy.vv import build_vv, connection_json
from app.services import services_of
from app.views.consoles import NO_STORE
from app.views.forms import client_address
from app.views.guards import admin_api
from app.vms.records import get_vm


@admin_api
@describe(
    "Open a VM's console: a console ticket, the SPICE password and a .vv file for remote-viewer",
    responses={200: AdminConsole},
    description=(
        "As the console page: errors 404 vm_not_found, 409 vm_not_running, vm_not_defined or "
        "no_spice_display, 502 display_unavailable, 503 hypervisor_unavailable. "
        "A read-only token is refused."
    ),
)
async def open_console(request: Request) -> Response:
    vm_id = int(request.path_params["vm_id"])
    services = services_of(request)
    try:
        grant = await services.consoles.open(
            user_id=request.state.user.id,
            vm_id=vm_id,
            client_address=client_address(request),
            gateway_host=request.url.hostname,
        )
    except ConsoleError as exc:
        raise ApiError(exc.status, exc.code, exc.message, headers=NO_STORE) from exc
    vm = await get_vm(services.db, vm_id)
    title = f"{grant.vm_name} · KVM-VDI"
    # The viewer offers USB redirection only where the VM's device policy allows it.
    vv = build_vv(grant, title=title, usb_redirect=vm is not None and int(vm.usb_redirect) > 0)
    connection = connection_json(grant, title=title, vv=vv, console_url=f"/vms/{vm_id}/console")
    body = AdminConsole(
        vm={"id": grant.vm_id, "name": grant.vm_name},
        connection=Connection(**connection),
        expires_at=grant.expires_at,
        password_valid_until=grant.password_valid_until,
    )
    return answer(body, headers=NO_STORE)


routes = [Route("/api/v1/admin/vms/{vm_id:id}/console", open_console, methods=["POST"])]
