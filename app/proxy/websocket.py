"""The browser console's websocket: ``/console/ws/{vm_id}`` to the VM's SPICE display.

The HTML5 console opens one websocket per SPICE channel. Each must come from an
allowed ``Origin`` (the dashboard's own, ``server.public_origins`` or
``console.allowed_origins``) and carry the console ticket cookie (HttpOnly,
SameSite=Strict, scoped to this exact path), whose ticket must belong to the
VM in the path. Then the endpoint connects to the display the ticket is bound
to and moves bytes both ways with bounded buffers: a chunk read from the
display is sent before more is read past ``console.buffer_limit``, and a
message from the browser is written only when the display's socket has drained.

Refusals after the handshake use application close codes (see
:mod:`app.proxy.sessions`) so the console page can say what happened; a foreign
Origin is refused before the handshake (HTTP 403) and learns nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from app.proxy import sessions as reasons
from app.proxy.paths import TICKET_COOKIE
from app.proxy.pump import SocketEnd, connect
from app.proxy.sessions import CloseReason, Refused
from app.proxy.wsprotocol import DIRECT_EXTENSION
from app.services import services_of

if TYPE_CHECKING:
    from app.proxy.service import ConsoleService

log = logging.getLogger("kvmvdi.proxy.websocket")

SUBPROTOCOL = "binary"
# When the display hangs up, the reason (the VM stopped, a revocation) usually arrives a
# moment later as a libvirt event: wait that long so the page can say what happened.
DISPLAY_HANGUP_GRACE = 2.0
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` in lower case without a default port, or ``None`` if not an origin."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def origin_allowed(websocket: WebSocket, extra_origins: list[str]) -> bool:
    """Whether the handshake's Origin is the dashboard's own origin or an allowed one."""
    origin = normalize_origin(websocket.headers.get("origin", ""))
    if origin is None:
        return False
    scheme = "https" if websocket.url.scheme in ("wss", "https") else "http"
    own = normalize_origin(f"{scheme}://{websocket.headers.get('host', '')}")
    allowed = {own, *(normalize_origin(o) for o in extra_origins)}
    allowed.discard(None)
    return origin in allowed


class WebSocketChannel:
    """One SPICE channel carried by a browser websocket."""

    def __init__(
        self,
        send: Send,
        receive: Receive,
        upstream: SocketEnd,
        *,
        queue_limit: int,
        direct: dict[str, Any] | None = None,
        hangup_grace: float = DISPLAY_HANGUP_GRACE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        # The dashboard's websocket protocol moves messages from socket callbacks (wsprotocol.py).
        self._direct = direct
        self._send_nowait: Callable[[bytes], bool] | None = direct["send_nowait"] if direct else None
        self._sending = False
        self._hangup_grace = hangup_grace
        self._receive = receive
        self.upstream = upstream
        self._limit = queue_limit
        self._clock = clock
        self.bytes_to_client = 0
        self.bytes_to_vm = 0
        self.last_activity = clock()
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._wakeup: asyncio.Future[None] | None = None
        self._vm_closed = False
        self._reason: CloseReason | None = None

    @property
    def queued(self) -> int:
        """Bytes read from the display and not yet handed to the websocket."""
        return self._queued

    def buffered(self) -> int:
        """Bytes this channel holds in user space: its queue and the display socket's write buffer."""
        return self._queued + self.upstream.buffered()

    def close(self, reason: CloseReason) -> None:
        """End the channel now: the browser gets a close frame with ``reason``."""
        if self._reason is None:
            self._reason = reason
        self.upstream.abort()
        self._chunks.clear()
        self._queued = 0
        self._wake()

    async def run(self) -> None:
        direct = self._direct
        if direct is not None:
            direct["set_receiver"](self._from_browser)
            self.upstream.attach(
                self._from_vm, on_writable=self._upstream_writable, on_closed=self._upstream_closed
            )
        else:
            self.upstream.attach(self._from_vm, on_closed=self._upstream_closed)
        sender = asyncio.get_running_loop().create_task(self._send_loop())
        try:
            await self._receive_loop()
        finally:
            if direct is not None:
                direct["set_receiver"](None)
                # Reading may be paused for the display's sake: let the closing handshake through.
                direct["resume_reading"]()
            self.upstream.abort()
            if not sender.done():
                sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    # -- display to browser ---------------------------------------------------------------

    def _from_vm(self, data: bytes) -> None:
        # Straight to the browser when nothing is queued or in flight and its socket takes it.
        if (
            not self._chunks
            and not self._sending
            and self._send_nowait is not None
            and self._send_nowait(data)
        ):
            self.bytes_to_client += len(data)
            self.last_activity = self._clock()
            return
        self._chunks.append(data)
        self._queued += len(data)
        if self._queued >= self._limit:
            self.upstream.set_reading(False)
        self._wake()

    def _upstream_closed(self, exc: Exception | None) -> None:
        self._vm_closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        send = self._send
        chunks = self._chunks
        try:
            while True:
                if not chunks:
                    if self._vm_closed or self._reason is not None:
                        break
                    self._wakeup = loop.create_future()
                    await self._wakeup
                    self._wakeup = None
                    continue
                data = chunks.popleft()
                self._queued -= len(data)
                if self._queued <= self._limit // 2 and not self.upstream.reading:
                    self.upstream.set_reading(True)
                self._sending = True
                await send({"type": "websocket.send", "bytes": data})
                self._sending = False
                self.bytes_to_client += len(data)
                self.last_activity = self._clock()
            if self._reason is None:
                self._wakeup = loop.create_future()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup, self._hangup_grace)
                self._wakeup = None
            reason = self._reason or reasons.VM_CLOSED
            await send({"type": "websocket.close", "code": reason.ws_code, "reason": reason.message})
        except (OSError, RuntimeError):
            # The browser went away (uvicorn's ClientDisconnected is an OSError): the
            # receive loop sees the disconnect and ends the channel.
            return

    # -- browser to display ---------------------------------------------------------------

    def _from_browser(self, data: bytes) -> None:
        """A binary message, straight from the websocket's socket callback."""
        upstream = self.upstream
        if upstream.closed:
            return
        upstream.write(data)
        self.bytes_to_vm += len(data)
        self.last_activity = self._clock()
        if not upstream.writable:
            self._upstream_writable(False)

    def _upstream_writable(self, writable: bool) -> None:
        # The display's socket is full (or drained): stop (or resume) reading the browser's.
        assert self._direct is not None
        self._direct["resume_reading" if writable else "pause_reading"]()

    async def _receive_loop(self) -> None:
        upstream = self.upstream
        while True:
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                # SPICE is binary; a text message is a confused client.
                self.close(reasons.CloseReason("protocol_error", 1003, "Binary messages only."))
                continue
            if not upstream.writable:
                await upstream.drained()
            if upstream.closed:
                continue
            upstream.write(data)
            self.bytes_to_vm += len(data)
            self.last_activity = self._clock()


class ConsoleWebSocketEndpoint:
    """ASGI endpoint of ``/console/ws/{vm_id}``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive, send)
        services = services_of(websocket)
        consoles: ConsoleService = services.consoles
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
                reason="invalid or expired console ticket",
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
