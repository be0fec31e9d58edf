"""The broker JSON API (``/api/v1``): bearer tokens, pools, desktops, leases, power.

Requests carry ``Authorization: Bearer <token>`` and no cookie, so CSRF does not
apply; the token alone authenticates. Bodies are read by :mod:`app.api.reader`
into the models of :mod:`app.api.bodies`. Errors are ``{"error", "message"}``
(``fields`` for a refused body) with the stable codes listed in
docs/architecture.md and the OpenAPI description.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.api.bodies import DesktopRequest, Login, SnapshotTake, UserPower
from app.api.describe import EMPTY, Answer, describe
from app.api.errors import ErrorBody, error_response
from app.api.ids import parse_id
from app.api.reader import read_body
from app.api.responses import BrokerPools, DesktopBooting, DesktopGranted, LeaseExpiry, LoggedIn, PowerStarted
from app.auth.login import LoginAttempt, Refusal
from app.broker.catalog import straight_target
from app.broker.clients import RealmError, requested_realm
from app.broker.desktops import BOOT_RETRY_SECONDS, Broker, DesktopAnswer
from app.broker.pools import failover_of
from app.broker.power import DesktopPowerError
from app.broker.tokens import TokenUser, authenticate_token, issue_token, revoke_token
from app.i18n import gettext as _
from app.services import services_of
from app.views import desktop_snapshots
from app.views.desktop_snapshots import SNAPSHOT_OUTCOMES, SNAPSHOTS
from app.views.forms import client_address, with_retry_after

Endpoint = Callable[[Request], Awaitable[Response]]


def error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return error_response(status, code, message, **extra)


def timestamp(value: datetime | None) -> str | None:
    return value.isoformat() + "Z" if value is not None else None


def token_required(endpoint: Endpoint) -> Endpoint:
    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        header = request.headers.get("authorization", "")
        scheme, _sep, token = header.partition(" ")
        user = None
        if scheme.lower() == "bearer":
            services = services_of(request)
            user = await authenticate_token(services.db, token.strip(), now=services.clock.now())
            if user is not None and user.source == "directory":
                user = await services.sessions.recheck_token_groups(user)
        if user is None:
            response = error(
                401, "invalid_token", _("Log in first: POST /api/v1/login gives a bearer token.")
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="kvm-vdi"'
            return response
        request.state.token_user = user
        return await endpoint(request)

    # A bearer token is a client's credential (lets tests enumerate every guarded route).
    guarded.required_role = "client"  # type: ignore[attr-defined]
    return guarded


def _path_int(request: Request, name: str) -> int | None:
    return parse_id(request.path_params.get(name))


@describe(
    "Log in (local account or directory) and get a bearer token",
    body=Login,
    responses={200: LoggedIn},
    description="Errors: 401 invalid_credentials, 429 throttled (see Retry-After), "
    "503 directory_unavailable, or busy (too many log-ins at once; see Retry-After).",
)
async def login(request: Request) -> Response:
    services = services_of(request)
    body = await read_body(request, Login)
    username, password = body.username, body.password
    address = client_address(request)
    try:
        requested_realm(body.realm, services.directory)
    except RealmError as exc:
        return error(
            400, "invalid", _("Check the request: realm: {exc}.").format(exc=exc), fields={"realm": str(exc)}
        )
    outcome = await services.logins.log_in(
        LoginAttempt(username=username, password=password, address=address, area="api", realm=body.realm)
    )
    if isinstance(outcome, Refusal):
        return with_retry_after(error(outcome.status, outcome.code, outcome.message), outcome)
    user = outcome.user
    token, expires_at = await issue_token(
        services.db,
        user.id,
        groups=outcome.groups,
        client_address=address,
        ttl=services.settings.security.api_token_ttl,
        now=services.clock.now(),
    )
    services.broker.catalog.remember_groups(user.id, outcome.groups)
    return JSONResponse(
        {
            "token": token,
            "expires_at": timestamp(expires_at),
            "user": {"username": user.username, "display_name": user.display_name, "source": user.source},
        }
    )


@token_required
@describe("Revoke the token", responses={204: EMPTY})
async def logout(request: Request) -> Response:
    user: TokenUser = request.state.token_user
    await revoke_token(services_of(request).db, user.token_id)
    await services_of(request).audit.record(
        "logout", actor=user.username, client_address=client_address(request), area="api"
    )
    return Response(status_code=204)


@token_required
@describe(
    "Pools the user may use, with free desktops and the user's own desktop", responses={200: BrokerPools}
)
async def list_pools(request: Request) -> Response:
    user: TokenUser = request.state.token_user
    pools = await services_of(request).broker.catalog.pools_for(user.user_id, user.groups)
    return JSONResponse({"pools": pools, "straight_to": straight_target(pools)})


def desktop_response(answer: DesktopAnswer, broker: Broker) -> Response:
    """The API's answer to a desktop request (shared with the portal's JSON endpoint)."""
    failover = failover_of(answer.pool)
    if answer.status == "ready":
        assert answer.claim is not None
        body: dict[str, Any] = {
            "status": "ready",
            "lease": broker.lease_json(answer.claim, answer.pool),
            "desktop": answer.desktop(),
        }
        if answer.connection is not None:
            body["connection"] = answer.connection
        return JSONResponse(body)
    if answer.status == "booting":
        response = JSONResponse(
            {"status": "booting", "retry_after": BOOT_RETRY_SECONDS, "desktop": answer.desktop()},
            status_code=202,
        )
        response.headers["Retry-After"] = str(BOOT_RETRY_SECONDS)
        return response
    if answer.status == "failover" and answer.refusal == "all_hypervisors_down":
        return JSONResponse({"status": "failover", "reason": answer.refusal, "failover": failover})
    if answer.refusal == "not_allowed":
        return error(403, "not_allowed", answer.message)
    if answer.status == "failed":
        # 503 when asking again may work; 409 when the desktop's state stands in the way.
        status = 503 if answer.transient else 409
        return error(status, answer.refusal or "desktop_failed", answer.message, desktop=answer.desktop())
    extra = {"failover": failover} if failover is not None else {}
    return error(409, answer.refusal or "no_free_desktop", answer.message, **extra)


DESKTOP_ANSWERS: dict[int, Answer] = {200: DesktopGranted, 202: DesktopBooting}
DESKTOP_ERRORS = (
    "Errors: 403 not_allowed, 404 pool_not_found, 409 no_free_desktop, maintenance, "
    "all_hypervisors_down or desktop_limit (with the pool's failover when it has one), "
    "desktop_failed (the desktop cannot be started until an administrator acts, e.g. its domain "
    "was removed), 503 desktop_failed (a failure that may pass: try again) or console_unavailable."
)


@token_required
@describe(
    "Get a desktop of the pool (the one already held, or a free one)",
    body=DesktopRequest,
    body_required=False,
    responses=DESKTOP_ANSWERS,
    description=DESKTOP_ERRORS,
)
async def request_desktop(request: Request) -> Response:
    user: TokenUser = request.state.token_user
    services = services_of(request)
    pool_id = _path_int(request, "pool_id")
    another = (await read_body(request, DesktopRequest)).new
    answer = None
    if pool_id is not None:
        answer = await services.broker.request_desktop(
            pool_id=pool_id,
            user_id=user.user_id,
            username=user.username,
            groups=user.groups,
            client_address=client_address(request),
            another=another,
            gateway_host=request.url.hostname,
        )
    if answer is None:
        return error(404, "pool_not_found", _("There is no such pool."))
    return desktop_response(answer, services.broker)


@token_required
@describe(
    "Keep the lease alive",
    responses={200: LeaseExpiry},
    description="Errors: 404 lease_not_found, 410 lease_ended (request a desktop again).",
)
async def heartbeat(request: Request) -> Response:
    user: TokenUser = request.state.token_user
    lease_id = _path_int(request, "lease_id")
    if lease_id is None:
        return error(404, "lease_not_found", _("There is no such lease."))
    state, expires_at = await services_of(request).broker.leases.heartbeat(lease_id, user.user_id)
    if state == "not_found":
        return error(404, "lease_not_found", _("There is no such lease."))
    if state == "ended":
        return error(410, "lease_ended", _("This lease has ended: request a desktop again."))
    return JSONResponse({"expires_at": timestamp(expires_at)})


@token_required
@describe("Give the desktop back", responses={204: EMPTY}, description="Errors: 404 lease_not_found.")
async def release(request: Request) -> Response:
    user: TokenUser = request.state.token_user
    lease_id = _path_int(request, "lease_id")
    released = lease_id is not None and await services_of(request).broker.leases.release(
        lease_id, user_id=user.user_id, actor=user.username, client_address=client_address(request)
    )
    if not released:
        return error(404, "lease_not_found", _("There is no such lease."))
    return Response(status_code=204)


@token_required
@describe(
    "Power action on the user's own desktop",
    body=UserPower,
    responses={202: PowerStarted},
    description="Errors: 403 not_your_desktop, 409 power_refused.",
)
async def power(request: Request) -> Response:
    user: TokenUser = request.state.token_user
    vm_id = _path_int(request, "vm_id")
    action = (await read_body(request, UserPower)).action
    try:
        state = (
            await services_of(request).broker.user_power(
                vm_id, user.user_id, action, actor=user.username, client_address=client_address(request)
            )
            if vm_id is not None
            else None
        )
    except DesktopPowerError as exc:
        return error(
            409,
            "power_refused",
            _("'{action}' was not carried out: {message}.").format(action=action, message=exc.message),
        )
    if state is None:
        return error(403, "not_your_desktop", _("This desktop is not assigned to you."))
    return JSONResponse({"state": state}, status_code=202)


@token_required
@describe(
    "The snapshots of the user's own desktop, where its pool offers them",
    responses={200: SNAPSHOTS, 409: ErrorBody},
)
async def snapshots(request: Request) -> Response:
    """The snapshots of the user's own desktop, where its pool offers them."""
    user: TokenUser = request.state.token_user
    return await desktop_snapshots.listing(request, _path_int(request, "vm_id") or 0, user.user_id)


@token_required
@describe("Take a snapshot of the user's own desktop", body=SnapshotTake, responses=SNAPSHOT_OUTCOMES)
async def take_snapshot(request: Request) -> Response:
    user: TokenUser = request.state.token_user
    vm_id = _path_int(request, "vm_id") or 0
    return await desktop_snapshots.take(request, vm_id, user.user_id, user.username)


@token_required
@describe("Go back to a snapshot of the user's own desktop", responses=SNAPSHOT_OUTCOMES)
async def revert_snapshot(request: Request) -> Response:
    user: TokenUser = request.state.token_user
    vm_id = _path_int(request, "vm_id") or 0
    return await desktop_snapshots.change(request, "revert", vm_id, user.user_id, user.username)


@token_required
@describe("Delete a snapshot of the user's own desktop", responses=SNAPSHOT_OUTCOMES)
async def delete_snapshot(request: Request) -> Response:
    user: TokenUser = request.state.token_user
    vm_id = _path_int(request, "vm_id") or 0
    return await desktop_snapshots.change(request, "delete", vm_id, user.user_id, user.username)


routes = [
    Route("/api/v1/login", login, methods=["POST"]),
    Route("/api/v1/logout", logout, methods=["POST"]),
    Route("/api/v1/pools", list_pools, methods=["GET"]),
    Route("/api/v1/pools/{pool_id}/desktop", request_desktop, methods=["POST"]),
    Route("/api/v1/leases/{lease_id}/heartbeat", heartbeat, methods=["POST"]),
    Route("/api/v1/leases/{lease_id}/release", release, methods=["POST"]),
    Route("/api/v1/desktops/{vm_id}/power", power, methods=["POST"]),
    Route("/api/v1/desktops/{vm_id}/snapshots", snapshots, methods=["GET"]),
    Route("/api/v1/desktops/{vm_id}/snapshots", take_snapshot, methods=["POST"]),
    Route("/api/v1/desktops/{vm_id}/snapshots/{name}/revert", revert_snapshot, methods=["POST"]),
    Route("/api/v1/desktops/{vm_id}/snapshots/{name}", delete_snapshot, methods=["DELETE"]),
]
