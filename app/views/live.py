"""The ``/live`` websocket: pushes hub events to a logged-in browser as JSON.

The handshake must come from one of the dashboard's own origins (the origin
the request was addressed to, plus ``server.public_origins``), which stops
other sites from riding on the session cookie. Every change of the database's
availability is a ``service`` message (the badge then says the service is
degraded); while the database is away a new socket gets that message instead of
the hello and is closed with 1013, so the page keeps retrying (a hello means the
database answered). The socket ends when the session expires or is ended on the
server (log-out, a password change, the user disabled: looked at again every
``SESSION_RECHECK`` seconds; close code 4401, the page then asks to log in again)
or when the browser falls behind (1013, the page reconnects and re-reads the
current state). The socket itself does not keep the session alive: only requests
do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from app.auth.origins import origin_allowed
from app.auth.session import SessionRules, SessionUser
from app.db.health import DatabaseUnavailable
from app.i18n.messages import localised
from app.live.hub import Subscription
from app.services import services_of
from app.views.guards import current_user

log = logging.getLogger("kvmvdi.live")

CLOSE_LAGGING = 1013
CLOSE_SESSION_ENDED = 4401
CLOSE_PASSWORD_CHANGE = 4403
CLOSE_TOO_MANY = 4429
# Seconds between looks at the session of an open socket.
SESSION_RECHECK = 15.0


def _session_lasts(user: SessionUser, rules: SessionRules) -> float:
    """Seconds to wait before looking at the session again; 0 when it has ended."""
    if user.ends_at is None:
        return 0.0
    return max(0.0, min((user.ends_at - rules.now()).total_seconds(), SESSION_RECHECK))


async def _forward(websocket: WebSocket, subscription: Subscription) -> None:
    # Runs in the socket's language (a copy of its context): kept messages are translated into it.
    async for event in subscription:
        message = event.message()
        message["data"] = localised(message["data"])
        await websocket.send_text(json.dumps(message, default=str))


async def _drain(websocket: WebSocket) -> None:
    # The browser sends nothing meaningful; reading notices its disconnect.
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await websocket.receive_text()


async def live(websocket: WebSocket) -> None:
    services = services_of(websocket)
    settings = services.settings
    if not origin_allowed(websocket, settings.server.public_origins):
        log.warning("live socket refused: origin %r not allowed", websocket.headers.get("origin"))
        await websocket.close(code=1008)
        return
    try:
        user = await current_user(websocket)
    except DatabaseUnavailable:
        # A signed session, but no database to check it against: say why, and let the page retry.
        await websocket.accept()
        await websocket.send_text(json.dumps({"topic": "service", "data": services.db.health.status()}))
        await websocket.close(code=CLOSE_LAGGING, reason="the database is unavailable, reconnect")
        return
    await websocket.accept()
    if user is None:
        await websocket.close(code=CLOSE_SESSION_ENDED, reason="log in again")
        return
    if user.must_change_password:
        await websocket.close(code=CLOSE_PASSWORD_CHANGE, reason="change your password first")
        return
    if services.hub.user_subscriber_count(user.id) >= settings.server.live_per_user_limit:
        # Each socket holds a queue of events: one user cannot open them without bound.
        await websocket.close(code=CLOSE_TOO_MANY, reason="too many live connections")
        return
    subscription = services.hub.subscribe(is_admin=user.is_admin, user_id=user.id)
    close_code, reason = CLOSE_LAGGING, "fell behind, reconnect"
    forward = asyncio.ensure_future(_forward(websocket, subscription))
    drain = asyncio.ensure_future(_drain(websocket))
    try:
        await websocket.send_text(json.dumps({"topic": "hello", "data": {"user": user.username}}))
        outage = False
        while True:
            # During a database outage the session cannot be looked at: try again a little later.
            wait = SESSION_RECHECK if outage else _session_lasts(user, services.session_rules)
            done, _ = await asyncio.wait({forward, drain}, timeout=wait, return_when="FIRST_COMPLETED")
            if drain in done:
                return
            if done:
                break
            # Ended elsewhere (log-out, a password change, the user disabled) or simply over?
            websocket.scope.pop("kvmvdi.user", None)
            try:
                current = await current_user(websocket)
            except DatabaseUnavailable:
                outage = True  # the hub tells this page about the outage
                continue
            outage = False
            if current is None or current.id != user.id:
                close_code, reason = CLOSE_SESSION_ENDED, "session ended"
                break
            user = current
    finally:
        subscription.close()
        for task in (forward, drain):
            task.cancel()
        await asyncio.gather(forward, drain, return_exceptions=True)
        if (
            websocket.client_state == WebSocketState.CONNECTED
            and websocket.application_state == WebSocketState.CONNECTED
        ):
            with contextlib.suppress(Exception):
                await websocket.close(code=close_code, reason=reason)


routes = [WebSocketRoute("/live", live, name="live")]
