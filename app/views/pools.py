"""Admin pages for pools: list, create, edit, members, delete; the portal's message of the day."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from app.api.describe import PAGE, REDIRECT, describe
from app.api.forms import MotdForm, NoFields, PoolForm, PoolMembersForm, PoolVmsForm, StraightForm, Toast
from app.broker import people
from app.broker import pools as store
from app.broker.pool_admin import PoolAdmin
from app.broker.preferences import (
    MOTD,
    MOTD_LIMIT,
    STRAIGHT_TO_DESKTOP,
    get_flag,
    get_preference,
    set_flag,
    set_preference,
)
from app.broker.schedule_times import DAY_NAMES
from app.db.records import PoolRecord
from app.i18n import gettext as _
from app.i18n import ngettext
from app.services import services_of
from app.views.forms import record_action, redirect_with_toast, render
from app.views.guards import admin_required
from app.views.pool_schedules import schedule_context


def _id(request: Request) -> int:
    try:
        return int(request.path_params["pool_id"])
    except (KeyError, ValueError):
        return -1


def _ints(values: list[Any]) -> list[int]:
    return [int(v) for v in values if str(v).isdigit()]


@admin_required
@describe("The pools", query=Toast, responses={200: PAGE})
async def index(request: Request) -> Response:
    db = services_of(request).db
    rows = await store.list_pools(db)
    counts = await store.pool_counts(db, [p.id for p in rows])
    return render(
        request,
        "pools/index.html",
        {
            "title": _("Pools"),
            "active": "pools",
            "pools": rows,
            "counts": counts,
            "motd": await get_preference(db, MOTD),
            "straight_everywhere": await get_flag(db, STRAIGHT_TO_DESKTOP),
            "toast": request.query_params.get("toast", ""),
        },
    )


async def _edit_page(
    request: Request,
    pool: PoolRecord | None,
    settings: store.PoolSettings | None,
    status: int = 200,
    error: str = "",
    schedule_form: dict[str, Any] | None = None,
) -> Response:
    db = services_of(request).db
    members = (
        await store.pool_members(db, pool.id)
        if pool is not None
        else store.PoolMembers(vms=[], users=[], groups=[])
    )
    return render(
        request,
        "pools/edit.html",
        {
            "title": pool.name if pool is not None else _("New pool"),
            "active": "pools",
            "pool": pool,
            "values": settings or (pool if pool is not None else store.PoolSettings(name="")),
            "errors": settings.errors if settings else {},
            "error": error,
            "members": members,
            "candidates": await store.unpooled_vms(db),
            "all_users": [u for u in await people.list_users(db) if u.role == "client"],
            "all_groups": await people.list_groups(db),
            "member_user_ids": {u.id for u in members.users},
            "member_group_ids": {g.id for g in members.groups},
            "straight_everywhere": await get_flag(db, STRAIGHT_TO_DESKTOP),
            "toast": request.query_params.get("toast", ""),
            **(await schedule_context(request, pool.id) if pool is not None else {}),
            "schedule_form": schedule_form or {"errors": {}, "values": {}, "days": list(DAY_NAMES[:5])},
        },
        status_code=status,
    )


async def schedule_form_failed(
    request: Request, pool_id: int, errors: dict[str, str], form: FormData
) -> Response:
    """The pool page again with the schedule form as the admin filled it in, and what is wrong."""
    pool = await store.get_pool(services_of(request).db, pool_id)
    values = {key: str(value) for key, value in form.items() if key != "csrf_token"}
    days = [str(day) for day in form.getlist("days")]
    return await _edit_page(
        request, pool, None, 400, schedule_form={"errors": errors, "values": values, "days": days}
    )


@admin_required
@describe("The new-pool form", responses={200: PAGE})
async def new(request: Request) -> Response:
    return await _edit_page(request, None, None)


@admin_required
@describe("Make a pool", form=PoolForm, responses={303: REDIRECT, 400: PAGE})
async def create(request: Request) -> Response:
    settings = store.PoolSettings.from_form(await request.form())
    try:
        pool_id = await PoolAdmin.of(services_of(request)).create(settings)
    except store.PoolError as exc:
        settings.errors.setdefault(exc.field or "name", str(exc))
        return await _edit_page(request, None, settings, 400)
    await record_action(request, "pool_created", target=settings.name)
    return redirect_with_toast(f"/pools/{pool_id}", _("Pool created"))


@admin_required
@describe("A pool: settings and members", query=Toast, responses={200: PAGE, 303: REDIRECT})
async def show(request: Request) -> Response:
    pool = await store.get_pool(services_of(request).db, _id(request))
    if pool is None:
        return RedirectResponse("/pools", status_code=303)
    return await _edit_page(request, pool, None)


@admin_required
@describe("Change a pool's settings", form=PoolForm, responses={303: REDIRECT, 400: PAGE})
async def update(request: Request) -> Response:
    services = services_of(request)
    pool = await store.get_pool(services.db, _id(request))
    if pool is None:
        return RedirectResponse("/pools", status_code=303)
    settings = store.PoolSettings.from_form(await request.form())
    try:
        running = await PoolAdmin.of(services).update(pool, settings)
    except store.PoolError as exc:
        settings.errors.setdefault(exc.field or "name", str(exc))
        return await _edit_page(request, pool, settings, 400)
    await record_pool_updated(request, settings)
    if running:
        note = ngettext(
            "Saved. The device policy reaches {count} running desktop at its next start",
            "Saved. The device policy reaches {count} running desktops at their next start",
            len(running),
        ).format(count=len(running))
        return redirect_with_toast(f"/pools/{pool.id}", note)
    return redirect_with_toast(f"/pools/{pool.id}", _("Saved"))


async def record_pool_updated(request: Request, settings: store.PoolSettings) -> None:
    """The audit record of a pool's new settings (the form's and the admin API's alike)."""
    await record_action(
        request,
        "pool_updated",
        target=settings.name,
        **{k: v for k, v in settings.values().items() if k != "name"},
    )


@admin_required
@describe("Add desktops to the pool", form=PoolVmsForm, responses={303: REDIRECT, 409: PAGE})
async def add_vms(request: Request) -> Response:
    services = services_of(request)
    pool = await store.get_pool(services.db, _id(request))
    if pool is None:
        return RedirectResponse("/pools", status_code=303)
    vm_ids = _ints((await request.form()).getlist("vm_id"))
    refused = (await PoolAdmin.of(services).add_vms(pool, vm_ids)).refused
    await record_action(request, "pool_vms_added", target=pool.name, vm_ids=vm_ids, refused=refused)
    if refused:
        return await _edit_page(
            request,
            pool,
            None,
            409,
            error=_("Not added (already in a pool, or not a VDI/simple VM): {names}").format(
                names=", ".join(refused)
            ),
        )
    return redirect_with_toast(f"/pools/{pool.id}", _("Desktops added"))


@admin_required
@describe("Take a desktop out of the pool", form=NoFields, responses={303: REDIRECT, 409: PAGE})
async def remove_vm(request: Request) -> Response:
    services = services_of(request)
    pool = await store.get_pool(services.db, _id(request))
    if pool is None:
        return RedirectResponse("/pools", status_code=303)
    vm_id = int(request.path_params["vm_id"])
    try:
        await PoolAdmin.of(services).remove_vm(pool, vm_id)
    except store.PoolError as exc:
        return await _edit_page(request, pool, None, 409, error=str(exc))
    await record_action(request, "pool_vm_removed", target=pool.name, vm_id=vm_id)
    return redirect_with_toast(f"/pools/{pool.id}", _("Desktop removed"))


@admin_required
@describe("Set who may use the pool", form=PoolMembersForm, responses={303: REDIRECT})
async def members(request: Request) -> Response:
    services = services_of(request)
    pool = await store.get_pool(services.db, _id(request))
    if pool is None:
        return RedirectResponse("/pools", status_code=303)
    form = await request.form()
    user_ids, group_ids = _ints(form.getlist("user_id")), _ints(form.getlist("group_id"))
    await PoolAdmin.of(services).set_members(pool, user_ids=user_ids, group_ids=group_ids)
    await record_action(request, "pool_members_set", target=pool.name, user_ids=user_ids, group_ids=group_ids)
    return redirect_with_toast(f"/pools/{pool.id}", _("Members saved"))


@admin_required
@describe("What deleting the pool does, to confirm", responses={200: PAGE, 303: REDIRECT})
async def confirm_delete(request: Request) -> Response:
    db = services_of(request).db
    pool = await store.get_pool(db, _id(request))
    if pool is None:
        return RedirectResponse("/pools", status_code=303)
    return render(
        request,
        "pools/delete.html",
        {
            "title": _("Delete {name}").format(name=pool.name),
            "active": "pools",
            "pool": pool,
            "members": await store.pool_members(db, pool.id),
            "in_use": await store.active_leases_in_pool(db, pool.id),
        },
    )


@admin_required
@describe("Delete the pool", form=NoFields, responses={303: REDIRECT, 409: PAGE})
async def delete(request: Request) -> Response:
    services = services_of(request)
    pool = await store.get_pool(services.db, _id(request))
    if pool is None:
        return RedirectResponse("/pools", status_code=303)
    try:
        await PoolAdmin.of(services).delete(pool)
    except store.PoolError as exc:
        return await _edit_page(request, pool, None, 409, error=str(exc))
    await record_action(request, "pool_deleted", target=pool.name)
    return redirect_with_toast("/pools", _("Pool deleted"))


@admin_required
@describe("Set the portal's message of the day", form=MotdForm, responses={303: REDIRECT})
async def save_motd(request: Request) -> Response:
    services = services_of(request)
    text = str((await request.form()).get("motd", "")).strip()
    if len(text) > MOTD_LIMIT:
        return redirect_with_toast(
            "/pools", _("Message too long (at most {limit} characters)").format(limit=MOTD_LIMIT)
        )
    await set_preference(services.db, MOTD, text)
    await record_action(request, "motd_changed")
    return redirect_with_toast("/pools", _("Message of the day saved"))


@admin_required
@describe("Open a user's sole desktop at log-in in every pool", form=StraightForm, responses={303: REDIRECT})
async def save_straight(request: Request) -> Response:
    services = services_of(request)
    everywhere = str((await request.form()).get("straight_to_desktop", "")) == "1"
    await set_flag(services.db, STRAIGHT_TO_DESKTOP, everywhere)
    await record_action(request, "straight_to_desktop_changed", everywhere=everywhere)
    return redirect_with_toast("/pools", _("Saved"))


routes = [
    Route("/pools", index, methods=["GET"], name="pools"),
    Route("/pools/new", new, methods=["GET"]),
    Route("/pools", create, methods=["POST"]),
    Route("/pools/motd", save_motd, methods=["POST"]),
    Route("/pools/straight", save_straight, methods=["POST"]),
    Route("/pools/{pool_id:id}", show, methods=["GET"]),
    Route("/pools/{pool_id:id}", update, methods=["POST"]),
    Route("/pools/{pool_id:id}/vms", add_vms, methods=["POST"]),
    Route("/pools/{pool_id:id}/vms/{vm_id:id}/remove", remove_vm, methods=["POST"]),
    Route("/pools/{pool_id:id}/members", members, methods=["POST"]),
    Route("/pools/{pool_id:id}/delete", confirm_delete, methods=["GET"]),
    Route("/pools/{pool_id:id}/delete", delete, methods=["POST"]),
]
