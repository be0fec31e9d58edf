"""The answers about snapshots of a user's own desktop, shared by the broker API (bearer token) and
the client portal (session cookie): the handlers say who asks, this module asks the broker and
answers in the same JSON either way."""

from __future__ import annotations

from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import Response

from app.api import out
from app.api.bodies import SnapshotTake
from app.api.describe import Answer
from app.api.errors import error_response
from app.api.image_models import SnapshotFailed, SnapshotOutcome, SnapshotRefusal, UserSnapshotList
from app.api.reader import read_body
from app.broker.snapshots import Outcome, SnapshotRefused
from app.services import services_of
from app.views.forms import client_address

SNAPSHOTS = UserSnapshotList
SNAPSHOT_OUTCOMES: dict[int, Answer] = {200: SnapshotOutcome, 202: SnapshotOutcome, 409: SnapshotRefusal}


def snapshot_outcome(outcome: Outcome) -> Response:
    """A user's snapshot action: 200 done, 202 still running, 409 failed; the list in each."""
    status = {"succeeded": 200, "running": 202}.get(outcome.state, 409)
    body: dict[str, Any] = {
        "state": outcome.state,
        "message": outcome.message,
        "snapshots": outcome.snapshots,
    }
    if outcome.state == "failed":
        return out.answer(SnapshotFailed.model_validate({**body, "error": "snapshot_failed"}), status)
    return out.answer(SnapshotOutcome.model_validate(body), status)


def snapshot_refused(exc: SnapshotRefused) -> Response:
    if exc.fields:
        return error_response(exc.status, exc.code, exc.message, fields=exc.fields)
    return error_response(exc.status, exc.code, exc.message)


async def listing(request: Request, vm_id: int, user_id: int) -> Response:
    """The snapshots of the desktop and how many the user may keep."""
    try:
        limit, found = await services_of(request).broker.snapshots.of(vm_id, user_id)
    except SnapshotRefused as exc:
        return snapshot_refused(exc)
    return out.answer(UserSnapshotList.model_validate({"limit": limit, "snapshots": found}))


async def take(request: Request, vm_id: int, user_id: int, actor: str) -> Response:
    """Take a snapshot named (and described) by the request's body."""
    body = await read_body(request, SnapshotTake)
    try:
        outcome = await services_of(request).broker.snapshots.take(
            vm_id,
            user_id,
            name=body.name or None,
            description=body.description.strip(),
            actor=actor,
            client_address=client_address(request),
        )
    except SnapshotRefused as exc:
        return snapshot_refused(exc)
    return snapshot_outcome(outcome)


async def change(
    request: Request, verb: Literal["revert", "delete"], vm_id: int, user_id: int, actor: str
) -> Response:
    """Go back to, or delete, the snapshot the path names."""
    snapshots = services_of(request).broker.snapshots
    call = snapshots.revert if verb == "revert" else snapshots.delete
    try:
        outcome = await call(
            vm_id, user_id, request.path_params["name"], actor=actor, client_address=client_address(request)
        )
    except SnapshotRefused as exc:
        return snapshot_refused(exc)
    return snapshot_outcome(outcome)
