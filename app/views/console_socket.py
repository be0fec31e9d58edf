"""The browser console's websocket: ``/console/ws/{vm_id}`` to the VM's SPICE display.

The HTML5 console opens one websocket per SPICE channel. Each must come from an
allowed ``Origin`` (the dashboard's own, ``server.public_origins`` or
``console.allowed_origins``) and carry the console ticket cookie (HttpOnly,
SameSite=Strict, scoped to this exact path), whose ticket must belong to the
VM in the path. Then the endpoint connects to the display the ticket is bound
to and hands both sockets to a :class:`app.proxy.websocket.WebSocketChannel`.

Refusals after the handshake use application close codes (see
:mod:`app.proxy.sessions`) so the console page can say what happened; a foreign
Origin is refused before the handshake (HTTP 403) and learns nothing.
"""

from __future__ import annotations

import contextlib
import functools
import logging

from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from app.auth.origins import origin_allowed
from app.i18n import gettext as _
from app.proxy import sessions as reasons
from app.proxy.paths import TICKET_COOKIE
from app.proxy.pump import connect
from app.proxy.sessions import CloseReason, Refused
from app.proxy.websocket import WebSocketChannel
from app.proxy.wsprotocol import DIRECT_EXTENSION
from app.services import services_of

log = logging.getLogger("kvmvdi.proxy.websocket")

SUBPROTOCOL = "binary"


class ConsoleSocket:
    """ASGI endpoint of ``/console/ws/{vm_id}``: an ASGI app, not a websocket function, because it
    uses the raw messages and the direct-send extension of the dashboard's websocket protocol."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive, send)
        services = services_of(websocket)
        consoles = services.consoles
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        client = scope.get("client")
        client_address = str(client[0]) if client else ""
        settings = services.settings
        if not origin_allowed(
            websocket, [*settings.server.public_origins, *settings.console.allowed_origins]
        ):
            log.warning(
                "console websocket from %s refused: origin %r not allowed",
                client_address,
                websocket.headers.get("origin", ""),
            )
            await send({"type": "websocket.close", "code": 1008})
            return
        offered = scope.get("subprotocols") or []
        if offered and SUBPROTOCOL not in offered:
            await send({"type": "websocket.close", "code": 1002})
            return
        subprotocol = SUBPROTOCOL if offered else None

        async def refuse(reason: CloseReason) -> None:
            # Accepted, then closed with a reason the console page can show.
            with contextlib.suppress(OSError, RuntimeError):
                await send({"type": "websocket.accept", "subprotocol": subprotocol})
                await send({"type": "websocket.close", "code": reason.ws_code, "reason": reason.message})

        secret = websocket.cookies.get(TICKET_COOKIE, "")
        ticket = await consoles.tickets.redeem(secret) if secret else None
        if ticket is None:
            await consoles.denials.refused(
                client_address,
                via="websocket",
                reason=_("invalid or expired console ticket"),
                target=scope["path"],
            )
            await refuse(reasons.TICKET_INVALID)
            return
        if ticket.vm_id != scope["path_params"]["vm_id"]:
            await refuse(reasons.WRONG_VM)
            return
        console = settings.console
        # TLS to the display whenever it has a TLS port, its certificate checked against the CA.
        port = ticket.tls_port if ticket.tls_port is not None else ticket.port
        try:
            if port is None:
                raise OSError("the ticket names no port")
            upstream = await connect(
                ticket.host,
                port,
                read_buffer=consoles.read_buffer,
                write_high_water=console.buffer_limit,
                connect_timeout=console.connect_timeout,
                tls=consoles.display_tls if ticket.tls_port is not None else None,
            )
        except (OSError, TimeoutError) as exc:
            # ssl.SSLError (a certificate not from the dashboard's CA) is an OSError too.
            log.warning(
                "console display of %s (%s:%s) unreachable: %s", ticket.vm_name, ticket.host, port, exc
            )
            await refuse(reasons.UNREACHABLE)
            return
        channel = WebSocketChannel(
            send,
            receive,
            upstream,
            queue_limit=console.buffer_limit,
            explain_hangup=functools.partial(consoles.sessions.display_hung_up, ticket.id),
            direct=(scope.get("extensions") or {}).get(DIRECT_EXTENSION),
        )
        try:
            session = consoles.sessions.admit(ticket, channel, client_address=client_address, via="websocket")
        except Refused as refused:
            upstream.abort()
            await refuse(refused.reason)
            return
        try:
            await send({"type": "websocket.accept", "subprotocol": subprotocol})
            await channel.run()
        except OSError:
            pass  # the browser left during the handshake
        finally:
            upstream.abort()
            consoles.sessions.release(session, channel)
