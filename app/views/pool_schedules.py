"""Pool schedules: the admin JSON API and the pool page's form (add, turn on or off, delete).

Every change is audited; the runner is woken so that a schedule due now runs at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from app.api.admin_models import ScheduleAnswer, ScheduleDeleted, ScheduleList
from app.api.bodies import PoolSchedule, PoolScheduleChange
from app.api.describe import PAGE, REDIRECT, describe
from app.api.errors import ApiError
from app.api.forms import ScheduleActionForm, ScheduleForm
from app.api.out import answer
from app.api.reader import read_body
from app.broker import pools as pool_store
from app.broker.schedule_times import DAY_LABELS, DAY_NAMES
from app.broker.schedules import KINDS, Schedule, ScheduleError, ScheduleSpec, spec_from_form
from app.i18n import gettext as _
from app.services import services_of
from app.views.forms import record_action, redirect_with_toast
from app.views.guards import admin_api, admin_required

PREFIX = "/api/v1/admin/pools/{pool_id:id}/schedules"


def _summary(request: Request, schedule: Schedule) -> dict[str, Any]:
    runner = services_of(request).schedules
    return schedule.summary(runner.clock.now(), runner.time_zone)


def _shown(moment: str | None) -> str:
    return datetime.fromisoformat(moment).strftime("%a %Y-%m-%d %H:%M") if moment else ""


async def schedule_context(request: Request, pool_id: int) -> dict[str, Any]:
    """What the pool page shows of the pool's schedules (and the form's choices)."""
    runner = services_of(request).schedules
    shown = []
    for schedule in await runner.store.list(pool_id):
        summary = _summary(request, schedule)
        last = summary["last_run"]
        shown.append(
            {
                "schedule": summary,
                "next_text": _shown(summary["next_run"]),
                "last_text": _shown(last["at"]) if last else "",
            }
        )
    return {
        "schedules": shown,
        "schedule_kinds": KINDS,
        "schedule_days": list(zip(DAY_NAMES, DAY_LABELS, strict=True)),
        "time_zone": runner.time_zone.key,
    }


def _not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", what)


async def _schedule_of(request: Request) -> Schedule | None:
    runner = services_of(request).schedules
    schedule = await runner.store.get(int(request.path_params["schedule_id"]))
    if schedule is None or schedule.pool_id != int(request.path_params["pool_id"]):
        return None
    return schedule


async def _create(request: Request, pool_id: int, spec: ScheduleSpec) -> Schedule:
    services = services_of(request)
    runner = services.schedules
    schedule_id = await runner.store.create(
        pool_id, spec, actor=request.state.user.username, now=runner.clock.now()
    )
    schedule = await runner.store.get(schedule_id)
    assert schedule is not None
    pool = await pool_store.get_pool(services.db, pool_id)
    await record_action(
        request,
        "pool_schedule_created",
        target=pool.name if pool else "",
        schedule=schedule.describe_english(),
    )
    runner.wake()
    return schedule


async def _remove(request: Request, schedule: Schedule) -> None:
    services = services_of(request)
    await services.schedules.store.delete(schedule.id)
    pool = await pool_store.get_pool(services.db, schedule.pool_id)
    await record_action(
        request,
        "pool_schedule_deleted",
        target=pool.name if pool else "",
        schedule=schedule.describe_english(),
    )


async def _switch(request: Request, schedule: Schedule, enabled: bool) -> None:
    services = services_of(request)
    await services.schedules.store.set_enabled(schedule.id, enabled)
    pool = await pool_store.get_pool(services.db, schedule.pool_id)
    await record_action(
        request,
        "pool_schedule_changed",
        target=pool.name if pool else "",
        schedule=schedule.describe_english(),
        enabled=enabled,
    )
    services.schedules.wake()


# -- JSON API ----------------------------------------------------------------------------------


async def _pool_id(request: Request) -> int:
    pool_id = int(request.path_params["pool_id"])
    if await pool_store.get_pool(services_of(request).db, pool_id) is None:
        raise _not_found(_("There is no such pool."))
    return pool_id


def _answer(request: Request, schedule: Schedule, status: int = 200) -> Response:
    return answer(ScheduleAnswer.model_validate({"schedule": _summary(request, schedule)}), status)


@admin_api
@describe("A pool's schedules, with their next and last runs", responses={200: ScheduleList})
async def api_list(request: Request) -> Response:
    pool_id = await _pool_id(request)
    runner = services_of(request).schedules
    schedules = [_summary(request, schedule) for schedule in await runner.store.list(pool_id)]
    return answer(ScheduleList.model_validate({"schedules": schedules, "time_zone": runner.time_zone.key}))


@admin_api
@describe(
    "Add a schedule to a pool: a keep-ready window, a nightly power-off, reset or populate",
    body=PoolSchedule,
    responses={201: ScheduleAnswer},
)
async def api_create(request: Request) -> Response:
    pool_id = await _pool_id(request)
    body = await read_body(request, PoolSchedule)
    try:
        schedule = await _create(request, pool_id, ScheduleSpec.parse(body.model_dump()))
    except ScheduleError as exc:
        raise ApiError(400, "invalid", str(exc), fields=exc.errors) from exc
    return _answer(request, schedule, 201)


async def _schedule_or_404(request: Request) -> Schedule:
    schedule = await _schedule_of(request)
    if schedule is None:
        raise _not_found(_("There is no such schedule."))
    return schedule


@admin_api
@describe("A schedule", responses={200: ScheduleAnswer})
async def api_one(request: Request) -> Response:
    return _answer(request, await _schedule_or_404(request))


@admin_api
@describe("Turn a schedule on or off", body=PoolScheduleChange, responses={200: ScheduleAnswer})
async def api_change(request: Request) -> Response:
    # The body is checked first: a bad one is refused the same whether the schedule exists or not.
    body = await read_body(request, PoolScheduleChange)
    schedule = await _schedule_or_404(request)
    await _switch(request, schedule, body.enabled)
    return _answer(request, await services_of(request).schedules.store.get(schedule.id) or schedule)


@admin_api
@describe("Delete a schedule", responses={200: ScheduleDeleted})
async def api_delete(request: Request) -> Response:
    schedule = await _schedule_or_404(request)
    await _remove(request, schedule)
    return answer(ScheduleDeleted(deleted=schedule.id))


# -- the pool page's form ------------------------------------------------------------------------


@admin_required
@describe("Add a schedule (the pool page's form)", form=ScheduleForm, responses={303: REDIRECT, 400: PAGE})
async def form_create(request: Request) -> Response:
    from app.views.pools import schedule_form_failed  # the pool page renders the form (no import cycle)

    pool_id = int(request.path_params["pool_id"])
    if await pool_store.get_pool(services_of(request).db, pool_id) is None:
        return RedirectResponse("/pools", status_code=303)
    form = await request.form()
    try:
        schedule = await _create(request, pool_id, spec_from_form(form.multi_items()))
    except ScheduleError as exc:
        return await schedule_form_failed(request, pool_id, exc.errors, form)
    return redirect_with_toast(
        f"/pools/{pool_id}#schedules", _("Schedule added: {schedule}").format(schedule=schedule.describe())
    )


@admin_required
@describe(
    "Turn a schedule on or off, or delete it (the pool page's buttons)",
    form=ScheduleActionForm,
    responses={303: REDIRECT},
)
async def form_change(request: Request) -> Response:
    schedule = await _schedule_of(request)
    pool_id = int(request.path_params["pool_id"])
    if schedule is not None:
        action = (await request.form()).get("action", "")
        if action == "delete":
            await _remove(request, schedule)
        elif action in ("enable", "disable"):
            await _switch(request, schedule, action == "enable")
    return RedirectResponse(f"/pools/{pool_id}#schedules", status_code=303)


routes = [
    Route(PREFIX, api_list, methods=["GET"]),
    Route(PREFIX, api_create, methods=["POST"]),
    Route(PREFIX + "/{schedule_id:id}", api_one, methods=["GET"]),
    Route(PREFIX + "/{schedule_id:id}", api_change, methods=["PATCH"]),
    Route(PREFIX + "/{schedule_id:id}", api_delete, methods=["DELETE"]),
    Route("/pools/{pool_id:id}/schedules", form_create, methods=["POST"]),
    Route("/pools/{pool_id:id}/schedules/{schedule_id:id}", form_change, methods=["POST"]),
]
