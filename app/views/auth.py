"""Admin log-in, log-out and own password change."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from app.api.describe import PAGE, REDIRECT, describe
from app.api.forms import LoginForm, NextPage, NoFields, PasswordForm
from app.auth.accounts import AccountError, set_password
from app.auth.first_admin import forget_first_admin_password
from app.auth.login import MAX_USERNAME, Refusal
from app.auth.passwords import WeakPasswordError
from app.auth.session import end_session, start_session
from app.auth.sessions import revoke_user_credentials
from app.i18n import gettext as _
from app.services import services_of
from app.views.forms import (
    client_address,
    log_in_from_form,
    redirect_with_toast,
    render,
    safe_next,
    with_retry_after,
)
from app.views.guards import current_user, require_role
from app.views.language import settle_language


@describe("The administrators' log-in page", query=NextPage, responses={200: PAGE, 303: REDIRECT})
async def login_page(request: Request) -> Response:
    user = await current_user(request)
    if user is not None and user.is_admin:
        if user.must_change_password:
            return RedirectResponse("/account/password", status_code=303)
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    next_url = safe_next(request.query_params.get("next"))
    return render(request, "auth/login.html", {"title": _("Log in"), "next": next_url})


@describe("Log in as an administrator", form=LoginForm, responses={303: REDIRECT, 401: PAGE, 429: PAGE})
async def login_submit(request: Request) -> Response:
    form, outcome = await log_in_from_form(request, "admin")
    next_url = safe_next(str(form.get("next", "/")))
    if isinstance(outcome, Refusal):
        username = str(form.get("username", "")).strip()[:MAX_USERNAME]
        context = {"title": _("Log in"), "next": next_url, "username": username, "error": outcome.message}
        return with_retry_after(render(request, "auth/login.html", context, outcome.status), outcome)
    await start_session(request, outcome.user, services_of(request).sessions)
    target = "/account/password" if outcome.user.must_change_password else next_url
    return await settle_language(request, RedirectResponse(target, status_code=303), outcome.user.id)


@describe("Log out", form=NoFields, responses={303: REDIRECT})
async def logout(request: Request) -> Response:
    user = await current_user(request)
    if user is not None:
        await services_of(request).audit.record(
            "logout", actor=user.username, client_address=client_address(request)
        )
    await end_session(request, services_of(request).sessions)
    return redirect_with_toast("/login", _("You are logged out."), "info")


@require_role("admin", login_path="/login", allow_pending_password=True)
@describe("The change-password page", responses={200: PAGE})
async def password_page(request: Request) -> Response:
    return render(request, "auth/password.html", {"title": _("Change password"), "errors": {}})


@require_role("admin", login_path="/login", allow_pending_password=True)
@describe("Change one's own password", form=PasswordForm, responses={303: REDIRECT, 400: PAGE})
async def password_submit(request: Request) -> Response:
    services = services_of(request)
    user = request.state.user
    form = await request.form()
    current = str(form.get("current_password", ""))
    new = str(form.get("new_password", ""))
    repeat = str(form.get("repeat_password", ""))
    checked = await services.logins.check_password(
        user_id=user.id, username=user.username, password=current, address=client_address(request)
    )
    # (field, message): the one problem to report, next to its field.
    problem: tuple[str, str] | None = None
    if isinstance(checked, Refusal):
        problem = ("current_password", f"Current password: {checked.message}")
    elif not checked:
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
        context = {"title": _("Change password"), "errors": errors}
        if isinstance(checked, Refusal):
            return with_retry_after(render(request, "auth/password.html", context, checked.status), checked)
        return render(request, "auth/password.html", context, status_code=400)
    await services.audit.record(
        "password_changed", actor=user.username, client_address=client_address(request)
    )
    # Every session and token of this account ends (a stolen one too); this browser gets a fresh one.
    await revoke_user_credentials(services.db, user.id)
    await start_session(request, user, services.sessions, groups=user.groups)
    forget_first_admin_password(services.settings.data_dir, user.username)
    return redirect_with_toast("/", _("Password changed."))


routes = [
    Route("/login", login_page, methods=["GET"], name="login"),
    Route("/login", login_submit, methods=["POST"]),
    Route("/logout", logout, methods=["POST"], name="logout"),
    Route("/account/password", password_page, methods=["GET"], name="account_password"),
    Route("/account/password", password_submit, methods=["POST"]),
]
