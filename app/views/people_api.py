"""Accounts and directory groups through the admin API: ``/api/v1/admin/users`` and ``/groups``.

What the Users page does, with its rules (:mod:`app.broker.people`) and its audit actions:
make a local account (its generated password answered once), disable or enable one, reset
its password, delete it; register and unregister directory groups. Which pools a group may
use is set on the pool (``PUT /api/v1/admin/pools/{id}/members``).
"""

from __future__ import annotations

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api.admin_bodies import AccountChange, NewAccount, NewGroup
from app.api.describe import EMPTY, describe
from app.api.errors import ApiError
from app.api.out import answer
from app.api.pool_models import (
    GroupAnswer,
    GroupList,
    GroupOut,
    UserAnswer,
    UserList,
    UserOut,
    UserWithPassword,
)
from app.api.reader import read_body
from app.auth.accounts import AccountError
from app.auth.passwords import WeakPasswordError
from app.broker import account_admin, people
from app.db.records import UserRecord
from app.db.schema import pool_groups
from app.i18n import gettext as _
from app.services import services_of
from app.views.forms import record_action
from app.views.guards import admin_api

PREFIX = "/api/v1/admin"


def _user_id(request: Request) -> int:
    return int(request.path_params["user_id"])


async def _user(request: Request, user_id: int) -> UserRecord:
    user = await people.get_user(services_of(request).db, user_id)
    if user is None:
        raise ApiError(404, "not_found", _("No user with id {user_id}.").format(user_id=user_id))
    return user


def _refused(exc: Exception) -> ApiError:
    """What the account's state does not allow (the Users page says it as a sentence too)."""
    message = str(exc)
    return ApiError(409, "refused", message[:1].upper() + message[1:] + ".")


@admin_api
@describe(
    "Every account: administrators and portal users, local and from the directory", responses={200: UserList}
)
async def list_users(request: Request) -> Response:
    users = await people.list_users(services_of(request).db)
    return answer(UserList(users=[UserOut.of(user) for user in users]))


@admin_api
@describe(
    "Make a local account (its generated password is answered once)",
    body=NewAccount,
    responses={201: UserWithPassword},
    description="An administrator chooses their own password at their first log-in; 400 invalid for a "
    "name already taken.",
)
async def create_user(request: Request) -> Response:
    body = await read_body(request, NewAccount)
    username = body.username.strip()
    try:
        user_id, password = await people.create_account(
            services_of(request).db, username, body.role, body.display_name, body.email
        )
    except (AccountError, WeakPasswordError) as exc:
        raise ApiError(400, "invalid", str(exc), fields={"username": str(exc)}) from exc
    await record_action(request, "user_created", target=username, role=body.role, user_id=user_id)
    user = UserOut.of(await _user(request, user_id))
    return answer(
        UserWithPassword(user=user, password=password), 201, headers={"Location": f"{PREFIX}/users/{user_id}"}
    )


@admin_api
@describe("An account", responses={200: UserAnswer})
async def get_user(request: Request) -> Response:
    return answer(UserAnswer(user=UserOut.of(await _user(request, _user_id(request)))))


@admin_api
@describe(
    "Disable an account (its sessions, tokens and consoles end at once) or enable it",
    body=AccountChange,
    responses={200: UserAnswer},
    description="409 refused for the last enabled administrator.",
)
async def patch_user(request: Request) -> Response:
    user_id = _user_id(request)
    await _user(request, user_id)
    disabled = (await read_body(request, AccountChange)).disabled
    try:
        user = await account_admin.set_disabled(services_of(request), user_id, disabled)
    except AccountError as exc:
        raise _refused(exc) from exc
    await record_action(request, "user_disabled" if disabled else "user_enabled", target=user.username)
    return answer(UserAnswer(user=UserOut.of(await _user(request, user_id))))


@admin_api
@describe(
    "Reset an account's password (the new one is answered once)",
    responses={200: UserWithPassword},
    description="Its sessions and tokens end; an administrator chooses their own at the next log-in.",
)
async def reset_password(request: Request) -> Response:
    user_id = _user_id(request)
    await _user(request, user_id)
    try:
        user, password = await people.reset_password(services_of(request).db, user_id)
    except (AccountError, WeakPasswordError) as exc:
        raise _refused(exc) from exc
    await record_action(request, "password_reset", target=user.username)
    return answer(UserWithPassword(user=UserOut.of(await _user(request, user_id)), password=password))


@admin_api
@describe(
    "Delete an account",
    responses={204: EMPTY},
    description="409 refused for the last enabled administrator, or while the account holds desktops.",
)
async def delete_user(request: Request) -> Response:
    user_id = _user_id(request)
    await _user(request, user_id)
    try:
        user = await people.delete_user(services_of(request).db, user_id)
    except AccountError as exc:
        raise _refused(exc) from exc
    await record_action(request, "user_deleted", target=user.username, source=user.source)
    return Response(status_code=204)


async def _group_pools(request: Request) -> dict[int, list[int]]:
    rows = await services_of(request).db.fetch_all(
        sa.select(pool_groups.c.group_id, pool_groups.c.pool_id).order_by(pool_groups.c.pool_id)
    )
    found: dict[int, list[int]] = {}
    for row in rows:
        found.setdefault(row._mapping["group_id"], []).append(row._mapping["pool_id"])
    return found


@admin_api
@describe("The registered directory groups, with the pools their members may use", responses={200: GroupList})
async def list_groups(request: Request) -> Response:
    groups = await people.list_groups(services_of(request).db)
    pools = await _group_pools(request)
    return answer(GroupList(groups=[GroupOut.of(group, pools.get(group.id, [])) for group in groups]))


@admin_api
@describe(
    "Register a directory group",
    body=NewGroup,
    responses={201: GroupAnswer},
    description="400 invalid for a group already registered.",
)
async def add_group(request: Request) -> Response:
    body = await read_body(request, NewGroup)
    try:
        group_id = await people.add_group(services_of(request).db, body.name, body.description)
    except AccountError as exc:
        raise ApiError(400, "invalid", str(exc), fields={"name": str(exc)}) from exc
    await record_action(request, "directory_group_added", target=body.name.strip())
    group = next(group for group in await people.list_groups(services_of(request).db) if group.id == group_id)
    return answer(
        GroupAnswer(group=GroupOut.of(group, [])), 201, headers={"Location": f"{PREFIX}/groups/{group_id}"}
    )


@admin_api
@describe("Unregister a directory group (the pools it was granted forget it)", responses={204: EMPTY})
async def delete_group(request: Request) -> Response:
    group_id = int(request.path_params["group_id"])
    try:
        group = await people.delete_group(services_of(request).db, group_id)
    except AccountError as exc:
        raise ApiError(
            404, "not_found", _("No directory group with id {group_id}.").format(group_id=group_id)
        ) from exc
    await record_action(request, "directory_group_removed", target=group.name)
    return Response(status_code=204)


routes = [
    Route(f"{PREFIX}/users", list_users, methods=["GET"]),
    Route(f"{PREFIX}/users", create_user, methods=["POST"]),
    Route(f"{PREFIX}/users/{{user_id:id}}", get_user, methods=["GET"]),
    Route(f"{PREFIX}/users/{{user_id:id}}", patch_user, methods=["PATCH"]),
    Route(f"{PREFIX}/users/{{user_id:id}}", delete_user, methods=["DELETE"]),
    Route(f"{PREFIX}/users/{{user_id:id}}/password", reset_password, methods=["POST"]),
    Route(f"{PREFIX}/groups", list_groups, methods=["GET"]),
    Route(f"{PREFIX}/groups", add_group, methods=["POST"]),
    Route(f"{PREFIX}/groups/{{group_id:id}}", delete_group, methods=["DELETE"]),
]
