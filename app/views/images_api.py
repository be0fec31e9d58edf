"""Admin JSON API of golden image versions: ``/api/v1/admin/vms/{initial}/versions...``.

List, publish (also from a running initial, which keeps running), roll the idle VDI
machines onto the target, choose the target (roll back), plan and delete an unused version.
Errors as in :mod:`app.views.vms_api`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.api.bodies import Publish, PublishRunning, VersionDelete, VersionTarget
from app.api.describe import describe
from app.api.errors import ErrorBody
from app.api.image_models import ImageAnswer, VersionDeleted, VersionPlanAnswer
from app.api.out import answer
from app.api.reader import read_body
from app.api.responses import OperationAnswer
from app.views.forms import client_address
from app.views.vms_api import PREFIX, actor, api, operation_json, path_id, vm_service


@api
@describe(
    "An initial machine's image versions, its children and the rollout",
    responses={200: ImageAnswer, 409: ErrorBody},
)
async def versions(request: Request) -> Response:
    """The initial's versions, which VDI machine runs on which, the target and the roll-out's progress."""
    state = await vm_service(request).images.state(path_id(request))
    return answer(ImageAnswer.model_validate({"image": state.summary()}))


@api
@describe(
    "Publish the initial's disk as a new image version (an operation)",
    body=Publish,
    responses={202: OperationAnswer},
)
async def publish(request: Request) -> Response:
    """Publish version N+1: ``{origin?: "source" | "initial", shutdown?: bool, note?: str}``."""
    body = await read_body(request, Publish)
    op_id = await vm_service(request).images.publish(
        path_id(request), origin=body.origin, shutdown=body.shutdown, note=body.note, actor=actor(request)
    )
    return JSONResponse({"operation": await operation_json(request, op_id)}, status_code=202)


@api
@describe(
    "Publish the running initial's disk as a new image version without stopping it (an operation)",
    body=PublishRunning,
    responses={202: OperationAnswer, 409: ErrorBody},
)
async def publish_running(request: Request) -> Response:
    """Publish version N+1 from a point-in-time copy of the running initial's disk: ``{note?: str}``."""
    body = await read_body(request, PublishRunning)
    op_id = await vm_service(request).images.publish_running(
        path_id(request), note=body.note, actor=actor(request)
    )
    return JSONResponse({"operation": await operation_json(request, op_id)}, status_code=202)


@api
@describe("Move the idle desktops onto the target version (an operation)", responses={202: OperationAnswer})
async def rollout(request: Request) -> Response:
    """Move every idle VDI machine that is behind onto the target now."""
    op_id = await vm_service(request).images.rollout(path_id(request), actor=actor(request))
    return JSONResponse({"operation": await operation_json(request, op_id)}, status_code=202)


@api
@describe("Choose the version desktops move to", body=VersionTarget, responses={200: ImageAnswer})
async def target(request: Request) -> Response:
    """Make a version the target: ``{version_id}`` (roll back or forward)."""
    version_id = (await read_body(request, VersionTarget)).version_id
    state = await vm_service(request).images.set_target(path_id(request), version_id, actor=actor(request))
    return answer(ImageAnswer.model_validate({"image": state.summary()}))


@api
@describe("Go back to the version before the target", responses={200: ImageAnswer})
async def rollback(request: Request) -> Response:
    """Make the version before the target the target again."""
    state = await vm_service(request).images.roll_back(path_id(request), actor=actor(request))
    return answer(ImageAnswer.model_validate({"image": state.summary()}))


@api
@describe(
    "What deleting an unused version removes, to confirm", responses={200: VersionPlanAnswer, 409: ErrorBody}
)
async def delete_plan(request: Request) -> Response:
    """What deleting a version removes, for the confirmation; refused while a machine runs on it."""
    plan = await vm_service(request).images.plan_delete(path_id(request), path_id(request, "version_id"))
    return answer(VersionPlanAnswer.model_validate({"plan": plan.summary()}))


@api
@describe("Delete an unused version (confirm its files)", body=VersionDelete, responses={200: VersionDeleted})
async def delete(request: Request) -> Response:
    confirm = (await read_body(request, VersionDelete)).confirm_files
    plan = await vm_service(request).images.delete(
        path_id(request),
        path_id(request, "version_id"),
        confirmed_files=confirm,
        actor=actor(request),
        client_address=client_address(request),
    )
    return answer(VersionDeleted.model_validate({"deleted": plan.summary()}))


BASE = f"{PREFIX}/vms/{{vm_id:id}}/versions"
routes = [
    Route(BASE, versions, methods=["GET"]),
    Route(BASE, publish, methods=["POST"]),
    Route(f"{BASE}/from-running", publish_running, methods=["POST"]),
    Route(f"{BASE}/rollout", rollout, methods=["POST"]),
    Route(f"{BASE}/target", target, methods=["POST"]),
    Route(f"{BASE}/rollback", rollback, methods=["POST"]),
    Route(f"{BASE}/{{version_id:id}}/delete-plan", delete_plan, methods=["GET"]),
    Route(f"{BASE}/{{version_id:id}}/delete", delete, methods=["POST"]),
    Route(f"{BASE}/{{version_id:id}}", delete, methods=["DELETE"]),
]
