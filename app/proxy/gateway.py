"""The HTTP CONNECT gateway: native SPICE clients (remote-viewer) reach displays through it.

A ``.vv`` file says ``proxy=http://ticket:<console ticket>@<gateway>:<port>``;
remote-viewer then sends, once per SPICE channel::

    CONNECT <display host>:<display port> HTTP/1.0
    Proxy-Authorization: Basic base64("ticket:<console ticket>")

The gateway is never an open proxy: a request without valid credentials gets
``407``, a target other than the display the ticket is bound to gets ``403``
(and an audit record), anything that is not a well-formed CONNECT gets ``400``
or ``405``. Request heads are bounded in size and time. After ``200 Connection
established`` the gateway only moves the client's bytes (a TLS session between
remote-viewer and qemu), in the kernel with ``os.splice`` (:mod:`app.proxy.splice`).
"""
# i18n-ignore-file: its answers are HTTP reason phrases and texts for SPICE clients, not pages.

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import socket
from dataclasses import dataclass

import h11

from app.audit import AuditLog
from app.proxy import sessions as reasons
from app.proxy.denials import DeniedConsoleAudit
from app.proxy.pump import ReadBuffer, SocketEnd
from app.proxy.sessions import ConsoleSession, ConsoleSessions, Refused
from app.proxy.splice import DEFAULT_PIPE_SIZE, SplicedConnection, open_socket
from app.proxy.tickets import ConsoleTicket, TicketStore
from app.settings import ConsoleSettings, GatewaySettings

log = logging.getLogger("kvmvdi.proxy.gateway")

ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"
REALM = "KVM-VDI console"
# Connections still sending their request head (not yet authenticated): more are refused at
# once, overall and per client address (one address cannot take every slot).
MAX_PENDING_HANDSHAKES = 512


@dataclass(frozen=True)
class Target:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_target(raw: bytes) -> Target | None:
    """``host:port`` or ``[v6]:port`` of a CONNECT request, or ``None`` when malformed."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        return None
    if host.startswith("["):
        if not host.endswith("]"):
            return None
        host = host[1:-1]
    elif ":" in host:
        return None
    port = int(port_text)
    if not 0 < port < 65536 or not host or any(c in host for c in "/@?#% \t"):
        return None
    return Target(host, port)


def ticket_from_authorization(value: bytes | None) -> str | None:
    """The console ticket in a ``Proxy-Authorization: Basic`` header (the password part)."""
    if not value:
        return None
    scheme, _sep, encoded = value.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _user, sep, password = decoded.partition(":")
    return password if sep and password else None


def _response(status: int, reason: str, message: str, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    body = (message + "\n").encode()
    lines = [f"HTTP/1.1 {status} {reason}", "Content-Type: text/plain; charset=utf-8"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode() + body


class ConnectGateway:
    """The gateway's listener; started and stopped by the dashboard's lifespan."""

    def __init__(
        self,
        *,
        tickets: TicketStore,
        sessions: ConsoleSessions,
        audit: AuditLog,
        denials: DeniedConsoleAudit,
        read_buffer: ReadBuffer,
        settings: GatewaySettings,
        console: ConsoleSettings,
    ) -> None:
        self.tickets = tickets
        self.sessions = sessions
        self.audit = audit
        self.denials = denials
        self.read_buffer = read_buffer
        self.settings = settings
        self.console = console
        self._server: asyncio.Server | None = None
        self._handshakes: set[GatewayConnection] = set()
        self._pending_by_address: dict[str, int] = {}
        # Bytes each direction of a tunnel holds in the kernel (its pipe) before reading pauses.
        self.pipe_size = DEFAULT_PIPE_SIZE
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port actually listened on (useful with ``port = 0``)."""
        if self._server is None or not self._server.sockets:
            return self.settings.port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._accept, self.settings.host, self.settings.port, backlog=1024, reuse_address=True
        )
        log.info("CONNECT gateway listening on %s:%s", self.settings.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for connection in list(self._handshakes):
            connection.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _accept(self) -> SocketEnd:
        return GatewayConnection(self)

    def begin_handshake(self, connection: GatewayConnection) -> bool:
        """Count a connection still sending its request; False when a limit is reached."""
        address = connection.client_address
        if len(self._handshakes) >= MAX_PENDING_HANDSHAKES:
            return False
        if self._pending_by_address.get(address, 0) >= self.settings.max_pending_per_address:
            return False
        self._handshakes.add(connection)
        self._pending_by_address[address] = self._pending_by_address.get(address, 0) + 1
        return True

    def end_handshake(self, connection: GatewayConnection) -> None:
        if connection not in self._handshakes:
            return
        self._handshakes.discard(connection)
        address = connection.client_address
        left = self._pending_by_address.get(address, 1) - 1
        if left > 0:
            self._pending_by_address[address] = left
        else:
            self._pending_by_address.pop(address, None)

    def pending_from(self, address: str) -> int:
        return self._pending_by_address.get(address, 0)

    def track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class GatewayConnection(SocketEnd):
    """A client's socket: first its CONNECT request, then (if allowed) one end of a pipe to the display."""

    def __init__(self, gateway: ConnectGateway) -> None:
        super().__init__(gateway.read_buffer, write_high_water=gateway.console.buffer_limit)
        self.gateway = gateway
        self.parser = h11.Connection(h11.SERVER, max_incomplete_event_size=gateway.settings.max_header_bytes)
        self.client_address = ""
        self._timer: asyncio.TimerHandle | None = None
        self._answered = False
        self._received = 0
        self.attach(self._request_bytes, on_closed=self._lost)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self.client_address = str(peer[0]) if peer else ""
        if not self.gateway.begin_handshake(self):
            log.info("gateway: too many requests in progress from %s; refused", self.client_address)
            self.abort()
            return
        self._timer = asyncio.get_running_loop().call_later(
            self.gateway.settings.header_timeout, self._header_timeout
        )

    def _request_bytes(self, data: bytes) -> None:
        self._received += len(data)
        self.parser.receive_data(data)
        try:
            event = self.parser.next_event()
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:
                self._refuse(431, "Request Header Fields Too Large", "The request head is too large.")
            else:
                self._refuse(400, "Bad Request", "Malformed request: send CONNECT host:port.")
            return
        if event is h11.NEED_DATA:
            return
        if isinstance(event, h11.Request):
            # h11 bounds only incomplete heads; a whole one can arrive in a single read.
            head_size = self._received - len(self.parser.trailing_data[0])
            if head_size > self.gateway.settings.max_header_bytes:
                self._refuse(431, "Request Header Fields Too Large", "The request head is too large.")
                return
            self.set_reading(False)
            self.sink = None
            self._cancel_timer()
            task = asyncio.get_running_loop().create_task(self._handle(event))
            self.gateway.track(task)
            return
        self._refuse(400, "Bad Request", "Malformed request: send CONNECT host:port.")

    def _header_timeout(self) -> None:
        self._refuse(408, "Request Timeout", "The request head did not arrive in time.")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self.gateway.end_handshake(self)

    def _refuse(self, status: int, reason: str, message: str, *headers: tuple[str, str]) -> None:
        self._cancel_timer()
        self.gateway.end_handshake(self)
        if not self._answered:
            self._answered = True
            self.sink = None
            self.write(_response(status, reason, message, headers))
        self.close()

    async def _handle(self, request: h11.Request) -> None:
        gateway = self.gateway
        if request.method != b"CONNECT":
            self._refuse(
                405, "Method Not Allowed", "This gateway only tunnels CONNECT.", ("Allow", "CONNECT")
            )
            return
        target = parse_target(request.target)
        if target is None:
            self._refuse(400, "Bad Request", "The CONNECT target must be host:port.")
            return
        headers = dict(request.headers)
        secret = ticket_from_authorization(headers.get(b"proxy-authorization"))
        challenge = ("Proxy-Authenticate", f'Basic realm="{REALM}"')
        if secret is None:
            log.info("gateway: CONNECT %s from %s without credentials", target, self.client_address)
            self._refuse(407, "Proxy Authentication Required", "A console ticket is required.", challenge)
            return
        ticket = await gateway.tickets.redeem(secret)
        if ticket is None:
            await gateway.denials.refused(
                self.client_address,
                via="gateway",
                reason="invalid or expired console ticket",
                target=str(target),
            )
            self._refuse(
                407, "Proxy Authentication Required", "The console ticket is invalid or expired.", challenge
            )
            return
        if not ticket.allows(target.host, target.port):
            await self._audit_denied(ticket, target, 403, "target not bound to the console ticket")
            self._refuse(403, "Forbidden", "This console ticket does not open that address.")
            return
        await self._open(ticket, target)

    async def _open(self, ticket: ConsoleTicket, target: Target) -> None:
        gateway = self.gateway
        console = gateway.console
        loop = asyncio.get_running_loop()
        try:
            # The ticket's own endpoint, never a name from the request: nothing to resolve or spoof.
            upstream = await open_socket(ticket.host, target.port, timeout=console.connect_timeout)
        except (OSError, TimeoutError) as exc:
            log.warning("gateway: display %s of %s unreachable: %s", target, ticket.vm_name, exc)
            self._refuse(502, "Bad Gateway", "The desktop's display cannot be reached.")
            return
        client = self.own_socket()
        if client is None:
            upstream.close()
            return
        session_box: list[ConsoleSession] = []

        def finished(connection: SplicedConnection) -> None:
            if session_box:
                gateway.sessions.release(session_box[0], connection)

        spliced = SplicedConnection(client, upstream, on_finished=finished, pipe_size=gateway.pipe_size)
        try:
            session_box.append(
                gateway.sessions.admit(ticket, spliced, client_address=self.client_address, via="gateway")
            )
        except Refused as refused:
            spliced.close()
            status = 429 if refused.reason is reasons.TOO_MANY else 403
            self._refuse(
                status, "Too Many Requests" if status == 429 else "Forbidden", refused.reason.message
            )
            return
        self._answered = True
        gateway.end_handshake(self)
        pending, _rest = self.parser.trailing_data
        # From here the kernel moves the bytes: the asyncio transport lets go of the socket.
        self.sink = None
        self.on_closed = None
        self.abort()
        try:
            await loop.sock_sendall(client, ESTABLISHED)
            if pending:
                await loop.sock_sendall(upstream, bytes(pending))
        except OSError:
            spliced.close()
            return
        spliced.start()

    def own_socket(self) -> socket.socket | None:
        """A socket of our own on the client's connection (a duplicate of the transport's), or None
        when the client already left; the transport's own copy is closed when it is aborted."""
        if self.closed or self.transport is None:
            return None
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return None
        return socket.socket(fileno=os.dup(sock.fileno()))

    async def _audit_denied(
        self, ticket: ConsoleTicket | None, target: Target, status: int, reason: str
    ) -> None:
        with contextlib.suppress(Exception):
            await self.gateway.audit.record(
                "console.gateway_denied",
                actor=ticket.username if ticket else "",
                target=str(target),
                client_address=self.client_address,
                status=status,
                reason=reason,
                vm_id=ticket.vm_id if ticket else None,
                ticket_id=ticket.id if ticket else None,
            )
