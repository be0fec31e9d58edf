"""The image versions page of an initial machine (``/vms/{id}/versions``) and its live panel."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from app.api.describe import PAGE, TEXT, describe
from app.i18n import gettext as _
from app.views.forms import render
from app.views.guards import admin_required
from app.views.vms_api import vm_service
from app.vms.errors import VmError
from app.vms.versions import ImageState


def _context(state: ImageState) -> dict[str, object]:
    target = state.target
    older = [v for v in state.versions if target is not None and v.number < target.number]
    return {
        "active": "vms",
        "title": _("Image versions of {name}").format(name=state.initial.name),
        "state": state,
        "image": state.summary(),
        "rollback_to": older[-1] if older else None,
        "idle_behind": [
            child
            for child in state.children
            if state.behind(child) and child.assigned_user_id is None and child.operation_id is None
        ],
    }


async def _render(request: Request, template: str) -> Response:
    try:
        state = await vm_service(request).images.state(int(request.path_params["vm_id"]))
    except VmError as exc:
        return PlainTextResponse(exc.message, status_code=exc.status)
    return render(request, template, _context(state))


@admin_required
@describe("An initial machine's image versions and the rollout", responses={200: PAGE, 404: TEXT, 409: TEXT})
async def page(request: Request) -> Response:
    return await _render(request, "vms/versions.html")


@admin_required
@describe("The live part of the image versions page", responses={200: PAGE, 404: TEXT, 409: TEXT})
async def panel(request: Request) -> Response:
    """The page's live part, fetched again whenever a message says it changed."""
    return await _render(request, "vms/_versions_panel.html")


routes = [
    Route("/vms/{vm_id:id}/versions", page, methods=["GET"]),
    Route("/vms/{vm_id:id}/versions/panel", panel, methods=["GET"]),
]
