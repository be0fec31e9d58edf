"""Personal API tokens: the page where administrators make and revoke them, and the same
through the admin API (``/api/v1/admin/tokens``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api.admin_bodies import NewToken
from app.api.admin_models import TokenCreated, TokenList, TokenRecord
from app.api.describe import EMPTY, PAGE, REDIRECT, describe
from app.api.errors import ApiError, not_found
from app.api.forms import NewTokenForm, NoFields, Toast
from app.api.out import answer
from app.api.queries import TokenFilter
from app.api.reader import read_body, read_query, validate
from app.auth import personal_tokens as store
from app.i18n import gettext as _
from app.i18n import ngettext
from app.services import services_of
from app.views.forms import client_address, record_action, redirect_with_toast, render
from app.views.guards import admin_api, admin_required

PAGE_PATH = "/account/tokens"
# What the page offers; the API takes any number of days from 1 to 3650.
EXPIRY_DAYS = (30, 90, 365, 0)


def _expiry_choices() -> list[tuple[int, str]]:
    """(days, label) of the page's expiry choices; 0 is "never"."""
    labels = {365: _("a year"), 0: _("never")}
    return [
        (days, labels.get(days) or ngettext("{count} day", "{count} days", days).format(count=days))
        for days in EXPIRY_DAYS
    ]


async def _create(request: Request, body: NewToken) -> tuple[str, store.PersonalToken]:
    user = request.state.user
    services = services_of(request)
    secret, token = await store.create_token(
        services.db,
        user.id,
        body.name,
        read_only=body.read_only,
        expires_in_days=body.expires_in_days,
        client_address=client_address(request),
        now=services.clock.now(),
    )
    await record_action(
        request,
        "api_token_created",
        target=token.name,
        token_id=token.id,
        read_only=token.read_only,
        expires_at=token.expires_at,
    )
    return secret, token


async def _revoke(request: Request, token_id: int) -> store.PersonalToken | None:
    services = services_of(request)
    now = services.clock.now()
    token = await store.get_token(services.db, token_id, now=now)
    if token is None:
        return None
    await store.revoke(services.db, token.id, now=now)
    await record_action(
        request, "api_token_revoked", target=token.name, token_id=token.id, owner=token.username
    )
    return token


async def _page(
    request: Request, *, created: str | None = None, status_code: int = 200, **context: object
) -> Response:
    services = services_of(request)
    user = request.state.user
    tokens = await store.list_tokens(services.db, now=services.clock.now())
    return render(
        request,
        "account/tokens.html",
        {
            "title": _("API tokens"),
            "active": "",
            "mine": [token for token in tokens if token.user_id == user.id],
            "others": [token for token in tokens if token.user_id != user.id],
            "created": created,
            "expiry_choices": _expiry_choices(),
            **context,
        },
        status_code=status_code,
    )


@admin_required
@describe(
    "Your personal API tokens, and those of the other administrators", query=Toast, responses={200: PAGE}
)
async def tokens_page(request: Request) -> Response:
    return await _page(request, toast=request.query_params.get("toast", ""))


@admin_required
@describe(
    "Make a personal API token (its secret is shown once, on the answer page)",
    form=NewTokenForm,
    responses={200: PAGE, 400: PAGE},
)
async def create_submit(request: Request) -> Response:
    form = await request.form()
    days = str(form.get("expires_in_days", "0")).strip()
    try:
        body = validate(
            NewToken,
            {
                "name": str(form.get("name", "")).strip(),
                "read_only": form.get("read_only") == "on",
                "expires_in_days": int(days) if days.isdigit() and int(days) > 0 else None,
            },
        )
    except ApiError as exc:
        return await _page(request, error=exc.message, status_code=400)
    secret, _token = await _create(request, body)
    # The answer page, not a redirect: the secret never travels in a URL.
    return await _page(request, created=secret)


@admin_required
@describe("Revoke a personal API token (any administrator's)", form=NoFields, responses={303: REDIRECT})
async def revoke_submit(request: Request) -> Response:
    token = await _revoke(request, int(request.path_params["token_id"]))
    if token is None:
        return redirect_with_toast(PAGE_PATH, _("That token had already ended."), "info")
    return redirect_with_toast(
        PAGE_PATH, _("Token {name} revoked: it works no more.").format(name=token.name)
    )


@admin_api
@describe(
    "Live personal API tokens: yours, or every administrator's", query=TokenFilter, responses={200: TokenList}
)
async def list_tokens(request: Request) -> Response:
    everyone = read_query(request, TokenFilter).all
    services = services_of(request)
    found = await store.list_tokens(
        services.db, now=services.clock.now(), user_id=None if everyone else request.state.user.id
    )
    return answer(TokenList(tokens=[TokenRecord.of(token) for token in found]))


@admin_api
@describe("Make a personal API token acting as you", body=NewToken, responses={201: TokenCreated})
async def create_token(request: Request) -> Response:
    secret, token = await _create(request, await read_body(request, NewToken))
    return answer(TokenCreated(secret=secret, token=TokenRecord.of(token)), 201)


@admin_api
@describe("Revoke a personal API token (any administrator's)", responses={204: EMPTY})
async def revoke_token(request: Request) -> Response:
    token_id = int(request.path_params["token_id"])
    if await _revoke(request, token_id) is None:
        raise not_found(_("There is no live API token with id {id}.").format(id=token_id))
    return Response(status_code=204)


routes = [
    Route(PAGE_PATH, tokens_page, methods=["GET"], name="api_tokens"),
    Route(PAGE_PATH, create_submit, methods=["POST"]),
    Route(PAGE_PATH + "/{token_id:id}/revoke", revoke_submit, methods=["POST"]),
    Route("/api/v1/admin/tokens", list_tokens, methods=["GET"]),
    Route("/api/v1/admin/tokens", create_token, methods=["POST"]),
    Route("/api/v1/admin/tokens/{token_id:id}", revoke_token, methods=["DELETE"]),
]
