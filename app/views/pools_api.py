"""Pools through the admin API: ``/api/v1/admin/pools``: what the pool pages do.

Settings (device policy included) follow the form's rules (:class:`app.broker.pools.PoolSettings`),
changes go through :class:`app.broker.pool_admin.PoolAdmin` as the pages' do and are audited
under the same actions. Deleting has the page's plan (``.../delete-plan``) and its refusal
while desktops of the pool are held.
"""

from __future__ import annotations

from typing import Any, NoReturn

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api.admin_bodies import PoolFields, PoolMembersChange, PoolVms, PortalChange
from app.api.describe import EMPTY, describe
from app.api.errors import ApiError
from app.api.out import answer
from app.api.pool_models import (
    MemberGroup,
    MemberUser,
    PoolAnswer,
    PoolDeletePlan,
    PoolList,
    PoolMembersOut,
    PoolOut,
    PoolVmOut,
    PortalSettings,
    VmsAddedOut,
)
from app.api.reader import read_body
from app.broker import pools as store
from app.broker.pool_admin import PoolAdmin
from app.broker.preferences import (
    MOTD,
    STRAIGHT_TO_DESKTOP,
    get_flag,
    get_preference,
    set_flag,
    set_preference,
)
from app.db.records import PoolRecord
from app.i18n import gettext as _
from app.services import services_of
from app.views.forms import json_error, record_action
from app.views.guards import admin_api
from app.views.pools import record_pool_updated

PREFIX = "/api/v1/admin/pools"


async def _pool(request: Request) -> PoolRecord:
    return await _load(request, int(request.path_params["pool_id"]))


async def _load(request: Request, pool_id: int) -> PoolRecord:
    pool = await store.get_pool(services_of(request).db, pool_id)
    if pool is None:
        raise ApiError(404, "not_found", _("No pool with id {pool_id}.").format(pool_id=pool_id))
    return pool


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else ""
    return str(value)


def _settings(values: dict[str, Any]) -> store.PoolSettings:
    """The settings checked by the form's rules; a refusal names each field at fault."""
    settings = store.PoolSettings.from_form({key: _form_value(value) for key, value in values.items()})
    if settings.errors:
        _refuse(settings.errors)
    return settings


def _refuse(errors: dict[str, str]) -> NoReturn:
    raise ApiError(400, "invalid", " ".join(errors.values()), fields=errors)


def _stored(pool: PoolRecord) -> dict[str, Any]:
    return {name: getattr(pool, name) for name in PoolFields.model_fields}


async def _out(request: Request, pool: PoolRecord) -> PoolOut:
    counts = await store.pool_counts(services_of(request).db, [pool.id])
    return PoolOut.of(pool, counts[pool.id])


async def _members(request: Request, pool_id: int) -> PoolMembersOut:
    members = await store.pool_members(services_of(request).db, pool_id)
    return PoolMembersOut(
        vms=[PoolVmOut.of(vm) for vm in members.vms],
        users=[MemberUser(id=u.id, username=u.username, display_name=u.display_name) for u in members.users],
        groups=[MemberGroup(id=g.id, name=g.name) for g in members.groups],
    )


async def _answer(request: Request, pool_id: int, status: int = 200, **extra: Any) -> Response:
    pool = await _load(request, pool_id)
    headers = {"Location": f"{PREFIX}/{pool_id}"} if status == 201 else None
    body = PoolAnswer(pool=await _out(request, pool), members=await _members(request, pool_id), **extra)
    return answer(body, status, headers=headers)


@admin_api
@describe("Every pool, with its size and free desktops", responses={200: PoolList})
async def list_pools(request: Request) -> Response:
    db = services_of(request).db
    pools = await store.list_pools(db)
    counts = await store.pool_counts(db, [pool.id for pool in pools])
    return answer(PoolList(pools=[PoolOut.of(pool, counts[pool.id]) for pool in pools]))


@admin_api
@describe(
    "Make a pool",
    body=PoolFields,
    responses={201: PoolAnswer},
    description="The fields left out take a new pool's defaults (as on the new-pool form).",
)
async def create_pool(request: Request) -> Response:
    body = await read_body(request, PoolFields)
    settings = _settings(body.model_dump())
    try:
        pool_id = await PoolAdmin.of(services_of(request)).create(settings)
    except store.PoolError as exc:
        _refuse({exc.field or "name": str(exc)})
    await record_action(request, "pool_created", target=settings.name)
    return await _answer(request, pool_id, 201)


@admin_api
@describe("A pool: its settings, device policy and members", responses={200: PoolAnswer})
async def get_pool(request: Request) -> Response:
    pool = await _pool(request)
    return await _answer(request, pool.id)


@admin_api
@describe(
    "Change a pool's settings or device policy (only the fields sent)",
    body=PoolFields,
    responses={200: PoolAnswer},
    description="A changed device policy reaches the pool's stopped desktops now and its running "
    "ones at their next start (named in policy_pending).",
)
async def patch_pool(request: Request) -> Response:
    pool = await _pool(request)
    body = await read_body(request, PoolFields)
    settings = _settings({**_stored(pool), **body.sent()})
    try:
        running = await PoolAdmin.of(services_of(request)).update(pool, settings)
    except store.PoolError as exc:
        _refuse({exc.field or "name": str(exc)})
    await record_pool_updated(request, settings)
    return await _answer(request, pool.id, policy_pending=running)


@admin_api
@describe(
    "Add desktops to the pool",
    body=PoolVms,
    responses={200: VmsAddedOut},
    description="409 vms_refused (vms names them) for a VM in another pool or not a VDI or simple "
    "VM; the others asked for are added all the same, as on the pool page.",
)
async def add_vms(request: Request) -> Response:
    pool = await _pool(request)
    vm_ids = (await read_body(request, PoolVms)).vm_ids
    outcome = await PoolAdmin.of(services_of(request)).add_vms(pool, vm_ids)
    await record_action(request, "pool_vms_added", target=pool.name, vm_ids=vm_ids, refused=outcome.refused)
    if outcome.refused:
        return json_error(
            "vms_refused",
            _("Not added (already in a pool, or not a VDI or simple VM): {names}.").format(
                names=", ".join(outcome.refused)
            ),
            409,
            vms=outcome.refused,
        )
    return answer(VmsAddedOut(added=outcome.added, members=await _members(request, pool.id)))


@admin_api
@describe(
    "Take a desktop out of the pool",
    responses={204: EMPTY},
    description="409 desktop_in_use while someone holds it.",
)
async def remove_vm(request: Request) -> Response:
    pool = await _pool(request)
    vm_id = int(request.path_params["vm_id"])
    try:
        await PoolAdmin.of(services_of(request)).remove_vm(pool, vm_id)
    except store.PoolError as exc:
        raise ApiError(409, "desktop_in_use", str(exc)) from exc
    await record_action(request, "pool_vm_removed", target=pool.name, vm_id=vm_id)
    return Response(status_code=204)


@admin_api
@describe(
    "Set who may use the pool: portal users and directory groups",
    body=PoolMembersChange,
    responses={200: PoolAnswer},
)
async def set_members(request: Request) -> Response:
    pool = await _pool(request)
    body = await read_body(request, PoolMembersChange)
    await PoolAdmin.of(services_of(request)).set_members(
        pool, user_ids=body.user_ids, group_ids=body.group_ids
    )
    members = await store.pool_members(services_of(request).db, pool.id)
    await record_action(
        request,
        "pool_members_set",
        target=pool.name,
        user_ids=[user.id for user in members.users],
        group_ids=[group.id for group in members.groups],
    )
    return await _answer(request, pool.id)


@admin_api
@describe("What deleting the pool does, to confirm", responses={200: PoolDeletePlan})
async def delete_plan(request: Request) -> Response:
    pool = await _pool(request)
    in_use = await store.active_leases_in_pool(services_of(request).db, pool.id)
    return answer(
        PoolDeletePlan(
            pool=await _out(request, pool), members=await _members(request, pool.id), in_use=in_use
        )
    )


@admin_api
@describe(
    "Delete the pool (its VMs stay)",
    responses={204: EMPTY},
    description="409 pool_in_use while desktops of the pool are held: end those sessions first.",
)
async def delete_pool(request: Request) -> Response:
    pool = await _pool(request)
    try:
        await PoolAdmin.of(services_of(request)).delete(pool)
    except store.PoolError as exc:
        raise ApiError(409, "pool_in_use", str(exc)) from exc
    await record_action(request, "pool_deleted", target=pool.name)
    return Response(status_code=204)


async def _portal(request: Request) -> PortalSettings:
    db = services_of(request).db
    return PortalSettings(
        motd=await get_preference(db, MOTD), straight_to_desktop=await get_flag(db, STRAIGHT_TO_DESKTOP)
    )


@admin_api
@describe("The portal's message of the day and straight-to-desktop setting", responses={200: PortalSettings})
async def portal_settings(request: Request) -> Response:
    return answer(await _portal(request))


@admin_api
@describe(
    "Change the portal's message of the day or straight-to-desktop setting (only the fields sent)",
    body=PortalChange,
    responses={200: PortalSettings},
)
async def patch_portal_settings(request: Request) -> Response:
    body = await read_body(request, PortalChange)
    db = services_of(request).db
    if body.motd is not None:
        await set_preference(db, MOTD, body.motd.strip())
        await record_action(request, "motd_changed")
    if body.straight_to_desktop is not None:
        await set_flag(db, STRAIGHT_TO_DESKTOP, body.straight_to_desktop)
        await record_action(request, "straight_to_desktop_changed", everywhere=body.straight_to_desktop)
    return answer(await _portal(request))


POOL = f"{PREFIX}/{{pool_id:id}}"
routes = [
    Route(PREFIX, list_pools, methods=["GET"]),
    Route(PREFIX, create_pool, methods=["POST"]),
    Route(f"{PREFIX}/portal", portal_settings, methods=["GET"]),
    Route(f"{PREFIX}/portal", patch_portal_settings, methods=["PATCH"]),
    Route(POOL, get_pool, methods=["GET"]),
    Route(POOL, patch_pool, methods=["PATCH"]),
    Route(POOL, delete_pool, methods=["DELETE"]),
    Route(f"{POOL}/delete-plan", delete_plan, methods=["GET"]),
    Route(f"{POOL}/vms", add_vms, methods=["POST"]),
    Route(f"{POOL}/vms/{{vm_id:id}}", remove_vm, methods=["DELETE"]),
    Route(f"{POOL}/members", set_members, methods=["PUT"]),
]
