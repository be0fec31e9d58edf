"""Admin pages for accounts: portal users, administrators, directory users and groups."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from app.api.describe import PAGE, REDIRECT, describe
from app.api.forms import DisableForm, GroupForm, NewUserForm, NoFields, Toast
from app.auth.accounts import AccountError
from app.auth.passwords import WeakPasswordError
from app.broker import account_admin, people
from app.i18n import gettext as _
from app.services import services_of
from app.views.forms import record_action, redirect_with_toast, render
from app.views.guards import admin_required


def _id(request: Request, name: str = "user_id") -> int:
    try:
        return int(request.path_params[name])
    except (KeyError, ValueError):
        return -1


async def _page(request: Request, status_code: int = 200, **context: object) -> Response:
    db = services_of(request).db
    return render(
        request,
        "users/index.html",
        {
            "title": _("Users"),
            "active": "users",
            "users": await people.list_users(db),
            "groups": await people.list_groups(db),
            "directory_kind": services_of(request).settings.directory.kind,
            **context,
        },
        status_code=status_code,
    )


@admin_required
@describe("Users and directory groups", query=Toast, responses={200: PAGE})
async def index(request: Request) -> Response:
    return await _page(request, toast=request.query_params.get("toast", ""))


@admin_required
@describe(
    "Make a local account (its password is shown once)", form=NewUserForm, responses={200: PAGE, 400: PAGE}
)
async def create(request: Request) -> Response:
    services = services_of(request)
    form = await request.form()
    username = str(form.get("username", "")).strip()
    role = str(form.get("role", "client"))
    try:
        user_id, password = await people.create_account(
            services.db, username, role, str(form.get("display_name", "")), str(form.get("email", ""))
        )
    except (AccountError, WeakPasswordError) as exc:
        return await _page(
            request, 400, error=_("User name: {problem}.").format(problem=exc), form=dict(form)
        )
    await record_action(request, "user_created", target=username, role=role, user_id=user_id)
    return await _page(request, created={"username": username, "password": password, "role": role})


@admin_required
@describe("Disable or enable an account", form=DisableForm, responses={303: REDIRECT, 409: PAGE})
async def toggle(request: Request) -> Response:
    services = services_of(request)
    form = await request.form()
    disabled = str(form.get("disabled", "")) == "1"
    try:
        user = await account_admin.set_disabled(services, _id(request), disabled)
    except AccountError as exc:
        return await _page(request, 409, error=f"{exc}.")
    await record_action(request, "user_disabled" if disabled else "user_enabled", target=user.username)
    done = _("{username} disabled") if disabled else _("{username} enabled")
    return redirect_with_toast("/users", done.format(username=user.username))


@admin_required
@describe("Reset an account's password (shown once)", form=NoFields, responses={200: PAGE, 409: PAGE})
async def reset(request: Request) -> Response:
    services = services_of(request)
    try:
        user, password = await people.reset_password(services.db, _id(request))
    except (AccountError, WeakPasswordError) as exc:
        return await _page(request, 409, error=f"{exc}.")
    await record_action(request, "password_reset", target=user.username)
    return await _page(
        request, created={"username": user.username, "password": password, "role": user.role, "reset": True}
    )


@admin_required
@describe("What deleting the account does, to confirm", responses={200: PAGE, 303: REDIRECT})
async def confirm_delete(request: Request) -> Response:
    user = await people.get_user(services_of(request).db, _id(request))
    if user is None:
        return RedirectResponse("/users", status_code=303)
    return render(
        request,
        "users/delete.html",
        {"title": _("Delete {username}").format(username=user.username), "active": "users", "target": user},
    )


@admin_required
@describe("Delete an account", form=NoFields, responses={303: REDIRECT, 409: PAGE})
async def delete(request: Request) -> Response:
    services = services_of(request)
    try:
        user = await people.delete_user(services.db, _id(request))
    except AccountError as exc:
        return await _page(request, 409, error=f"{exc}.")
    await record_action(request, "user_deleted", target=user.username, source=user.source)
    return redirect_with_toast("/users", _("{username} deleted").format(username=user.username))


@admin_required
@describe("Register a directory group", form=GroupForm, responses={303: REDIRECT, 400: PAGE})
async def add_group(request: Request) -> Response:
    services = services_of(request)
    form = await request.form()
    name = str(form.get("name", ""))
    try:
        await people.add_group(services.db, name, str(form.get("description", "")))
    except AccountError as exc:
        return await _page(request, 400, error=_("Group name: {problem}.").format(problem=exc))
    await record_action(request, "directory_group_added", target=name)
    return redirect_with_toast("/users#groups", _("Group registered"))


@admin_required
@describe("Unregister a directory group", form=NoFields, responses={303: REDIRECT, 404: PAGE})
async def delete_group(request: Request) -> Response:
    services = services_of(request)
    try:
        group = await people.delete_group(services.db, _id(request, "group_id"))
    except AccountError as exc:
        return await _page(request, 404, error=f"{exc}.")
    await record_action(request, "directory_group_removed", target=group.name)
    return redirect_with_toast("/users#groups", _("Group removed"))


routes = [
    Route("/users", index, methods=["GET"], name="users"),
    Route("/users", create, methods=["POST"]),
    Route("/users/{user_id:id}/disabled", toggle, methods=["POST"]),
    Route("/users/{user_id:id}/password", reset, methods=["POST"]),
    Route("/users/{user_id:id}/delete", confirm_delete, methods=["GET"]),
    Route("/users/{user_id:id}/delete", delete, methods=["POST"]),
    Route("/groups", add_group, methods=["POST"]),
    Route("/groups/{group_id:id}/delete", delete_group, methods=["POST"]),
]
