"""Admin log-in, log-out and own password change."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from app.auth.accounts import AccountError, authenticate_local, set_password
from app.auth.passwords import WeakPasswordError, verify_password
from app.auth.session import current_user, end_session, require_role, start_session
from app.db.schema import users
from app.services import services_of
from app.views.forms import client_address, redirect_with_toast, render, safe_next

# Longer input is no user name of ours; cut it before it reaches the database or the audit log.
MAX_USERNAME = 128


async def login_page(request: Request) -> Response:
    user = await current_user(request)
    if user is not None and user.is_admin:
        if user.must_change_password:
            return RedirectResponse("/account/password", status_code=303)
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    next_url = safe_next(request.query_params.get("next"))
    return render(request, "auth/login.html", {"title": "Log in", "next": next_url})


async def login_submit(request: Request) -> Response:
    services = services_of(request)
    form = await request.form()
    username = str(form.get("username", "")).strip()[:MAX_USERNAME]
    password = str(form.get("password", ""))
    next_url = safe_next(str(form.get("next", "/")))
    address = client_address(request)
    throttle = services.login_throttle
    wait = throttle.retry_after(username=username, address=address)
    context = {"title": "Log in", "next": next_url, "username": username}
    if wait:
        await services.audit.record("login_throttled", actor=username, client_address=address)
        response = render(
            request,
            "auth/login.html",
            {**context, "error": f"Too many failed attempts. Try again in {wait} seconds."},
            status_code=429,
        )
        response.headers["Retry-After"] = str(wait)
        return response
    row = await authenticate_local(services.db, username, password)
    if row is None or row.role != "admin":
        throttle.failed(username=username, address=address)
        await services.audit.record("login_failed", actor=username, client_address=address, area="admin")
        return render(
            request, "auth/login.html", {**context, "error": "Wrong user name or password."}, status_code=401
        )
    throttle.succeeded(username=username)
    start_session(request, row)
    await services.audit.record("login", actor=row.username, client_address=address, area="admin")
    if row.must_change_password:
        return RedirectResponse("/account/password", status_code=303)
    return RedirectResponse(next_url, status_code=303)


async def logout(request: Request) -> Response:
    user = await current_user(request)
    if user is not None:
        await services_of(request).audit.record(
            "logout", actor=user.username, client_address=client_address(request)
        )
    end_session(request)
    return redirect_with_toast("/login", "You are logged out.", "info")


@require_role("admin", login_path="/login", allow_pending_password=True)
async def password_page(request: Request) -> Response:
    return render(request, "auth/password.html", {"title": "Change password", "errors": {}})


@require_role("admin", login_path="/login", allow_pending_password=True)
async def password_submit(request: Request) -> Response:
    services = services_of(request)
    user = request.state.user
    form = await request.form()
    current = str(form.get("current_password", ""))
    new = str(form.get("new_password", ""))
    repeat = str(form.get("repeat_password", ""))
    row: Any = await services.db.fetch_one(users.select().where(users.c.id == user.id))
    # (field, message): the one problem to report, next to its field.
    problem: tuple[str, str] | None = None
    if row is None or not verify_password(row.password_hash, current):
        problem = ("current_password", "Current password: wrong, type it again.")
    elif new != repeat:
        problem = ("repeat_password", "Repeat the new password: the two new passwords differ.")
    elif new == current:
        problem = ("new_password", "New password: must differ from the current one.")
    else:
        try:
            await set_password(services.db, user.id, new)
        except (WeakPasswordError, AccountError) as exc:
            problem = ("new_password", f"New password: {exc}.")
    errors = dict([problem]) if problem else {}
    if errors:
        return render(
            request, "auth/password.html", {"title": "Change password", "errors": errors}, status_code=400
        )
    await services.audit.record(
        "password_changed", actor=user.username, client_address=client_address(request)
    )
    # A fresh session (and CSRF token) from here on, without the must-change flag.
    start_session(request, row, groups=user.groups)
    return redirect_with_toast("/", "Password changed.")


routes = [
    Route("/login", login_page, methods=["GET"], name="login"),
    Route("/login", login_submit, methods=["POST"]),
    Route("/logout", logout, methods=["POST"], name="logout"),
    Route("/account/password", password_page, methods=["GET"], name="account_password"),
    Route("/account/password", password_submit, methods=["POST"]),
]
