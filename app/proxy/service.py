"""``ConsoleService``: open a console (SPICE password of the VM's epoch + console ticket), revoke consoles.

Opening a console of a running VM:

1. asks the VM's hypervisor for the SPICE endpoint the proxy connects to (at
   the hypervisor's console address from its record, never a domain's listen address);
2. takes the VM's password epoch (:mod:`app.proxy.epochs`): the password every
   console of this VM valid now shares, extended to at least
   ``console.spice_password_validity`` seconds, and sets it on the running
   domain (new channels only: SPICE checks it at link time). It is never
   stored or logged;
3. issues a console ticket bound to the user, the VM and that endpoint.

Revoking (VM stopped, reassigned, user disabled, session ended by an admin)
marks the tickets revoked, closes their open connections at once, ends the
VM's epoch and gives the display a new unknown password with
``connected='disconnect'``, so a client that connected to the display
directly with a handed-out password is cut off too. With several replicas the
others are told over the cluster bus and close theirs, and each replica also finds
revoked tickets of its open sessions in the database at every heartbeat
(:meth:`ConsoleService.close_revoked`), in case a message was lost.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from databases import Database

from app.audit import AuditLog
from app.clock import Clock
from app.cluster.bus import Bus, LocalBus
from app.cluster.census import ConsoleRoster, NoPeers, OpenConsole
from app.db.records import Identified, Record, UserRecord, fetch_record, fetch_records
from app.db.schema import console_epochs, console_tickets, users, vms
from app.hyper import ConnectionEvent, DomainEvent, HypervisorRegistry
from app.hyper.errors import DomainNotFound, HypervisorError, InvalidDomainState, NoSpiceDisplay
from app.hyper.graphics import SpiceEndpoint
from app.i18n import gettext as _
from app.proxy import sessions as reasons
from app.proxy.denials import DeniedConsoleAudit
from app.proxy.epochs import ConsoleEpochs
from app.proxy.gateway import ConnectGateway
from app.proxy.paths import console_websocket_path
from app.proxy.pump import ReadBuffer
from app.proxy.sessions import CloseReason, ConsoleSessions, SessionListener
from app.proxy.tickets import ConsoleTicket, TicketStore
from app.settings import Settings
from app.vms.records import Vm, get_vm

log = logging.getLogger("kvmvdi.proxy")

# Domain states in which a display can be shown (a paused VM still has its screen).
DISPLAY_STATES = frozenset({"running", "paused"})
# Domain states after which its consoles are over.
STOPPED_STATES = frozenset({"shutoff", "crashed", "pmsuspended", "undefined"})
# Cluster bus channel of console revocations.
REVOKE_CHANNEL = "console-revoke"
# 32 characters: well inside SPICE's 60-byte ticket limit and its RSA-1024 OAEP block.
SPICE_PASSWORD_BYTES = 24
# A revoked display's password: set, already expired, never told to anyone.
EXPIRED = datetime(2000, 1, 1)
# The password outlives the ticket by this much at least (clocks of hypervisors drift a little).
PASSWORD_MARGIN = 30


@dataclass(frozen=True)
class _TicketVm(Record):
    vm_id: int


@dataclass(frozen=True)
class _Revoked(Record):
    id: int
    revoke_reason: str


class ConsoleError(Exception):
    """Why a console cannot be opened: a stable code, a message for people, an HTTP status."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class ConsoleGrant:
    """One opened console. ``ticket`` and ``password`` are secrets: never logged (repr hides them)."""

    vm_id: int
    vm_name: str
    user_id: int
    ticket_id: int
    host: str
    # The display's plain port; None when it serves SPICE over TLS only.
    port: int | None
    proxy_url: str = field(repr=False)
    ticket: str = field(repr=False)
    password: str = field(repr=False)
    # The ticket opens new connections until then; the SPICE password is accepted until then.
    expires_at: datetime
    password_valid_until: datetime
    websocket_path: str
    tls_port: int | None = None
    host_subject: str | None = None
    ca: str | None = None


# A ticket issued since its VM's epoch started came with the epoch's password.
_IN_CURRENT_EPOCH = console_tickets.c.created_at >= console_epochs.c.started_at


def spice_password() -> str:
    return secrets.token_urlsafe(SPICE_PASSWORD_BYTES)


def close_reason_for(reason: str) -> CloseReason:
    if reason == reasons.VM_STOPPED.code:
        return reasons.VM_STOPPED
    return CloseReason(reason[:64] or reasons.REVOKED.code, reasons.REVOKED.ws_code, reasons.REVOKED.message)


def _endpoint_text(endpoint: SpiceEndpoint) -> str:
    ports = [str(p) for p in (endpoint.port, endpoint.tls_port) if p is not None]
    return f"{_url_host(endpoint.host)}:{'/'.join(ports)}"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class ConsoleService:
    def __init__(
        self,
        *,
        db: Database,
        registry: HypervisorRegistry,
        settings: Settings,
        audit: AuditLog,
        clock: Clock,
        session_listeners: Sequence[SessionListener] = (),
        bus: Bus | None = None,
        roster: ConsoleRoster | None = None,
        replica: str = "",
    ) -> None:
        self._db = db
        self._registry = registry
        self._settings = settings
        self.audit = audit
        self._bus = bus or LocalBus()
        self._roster = roster or NoPeers()
        self.replica = replica
        self.tickets = TicketStore(db, ttl=settings.console.ticket_ttl, clock=clock)
        self.epochs = ConsoleEpochs(db, secret=settings.session_secret())
        # One open or revocation at a time per VM in this process, so that an open never
        # re-enables the password of an epoch a revocation has just ended.
        self._vm_locks: dict[int, asyncio.Lock] = {}
        self.sessions = ConsoleSessions(
            audit=audit,
            settings=settings.console,
            vm_stopped=self._vm_stopped,
            listeners=session_listeners,
            peers=self._roster,
        )
        self._bus.subscribe(REVOKE_CHANNEL, self._revoked_elsewhere)
        # Refusals for want of a valid ticket: audited at a bounded rate.
        self.denials = DeniedConsoleAudit(audit)
        self.read_buffer = ReadBuffer(settings.console.read_size)
        # The console bridge's TLS to the displays: the dashboard's CA only, host names checked.
        self.display_tls = registry.spice_tls.ca.client_context()
        # The CONNECT gateway for native SPICE clients shares the tickets, sessions and read buffer.
        self.gateway: ConnectGateway | None = (
            ConnectGateway(
                tickets=self.tickets,
                sessions=self.sessions,
                audit=audit,
                denials=self.denials,
                read_buffer=self.read_buffer,
                settings=settings.gateway,
                console=settings.console,
            )
            if settings.gateway.enabled
            else None
        )
        self._unsubscribe: list[Callable[[], None]] = []

    async def start(self) -> None:
        await self.sessions.start()
        await self.denials.start()
        self._unsubscribe = [
            self._registry.add_domain_listener(self._domain_changed),
            self._registry.add_connection_listener(self._hypervisor_changed),
        ]
        if self.gateway is not None:
            await self.gateway.start()

    async def stop(self) -> None:
        if self.gateway is not None:
            await self.gateway.stop()
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        await self.sessions.stop()
        await self.denials.stop()

    # -- opening --------------------------------------------------------------------------

    async def open(
        self, *, user_id: int, vm_id: int, client_address: str = "", gateway_host: str | None = None
    ) -> ConsoleGrant:
        """Open a console of VM ``vm_id`` for user ``user_id`` (who must be allowed: the caller checks).

        ``gateway_host`` is the host name the client used to reach the dashboard; it
        goes into the proxy URL unless ``gateway.public_host`` is configured.
        """
        vm = await get_vm(self._db, vm_id)
        if vm is None:
            raise ConsoleError("vm_not_found", _("VM {vm_id} does not exist.").format(vm_id=vm_id), 404)
        user = await fetch_record(self._db, UserRecord, users.select().where(users.c.id == user_id))
        if user is None or user.disabled:
            raise ConsoleError("user_not_allowed", _("This account may not open consoles."), 403)
        try:
            hv = self._registry.get(vm.hypervisor_id)
            state = await hv.domain_state(vm.name)
        except DomainNotFound as exc:
            raise ConsoleError(
                "vm_not_defined", _("{name} is not defined on its hypervisor.").format(name=vm.name), 409
            ) from exc
        except HypervisorError as exc:
            raise ConsoleError(
                "hypervisor_unavailable",
                _("The hypervisor of {name} cannot be reached: {exc}").format(name=vm.name, exc=exc),
                503,
            ) from exc
        if state not in DISPLAY_STATES:
            raise ConsoleError(
                "vm_not_running",
                _("{name} is {state}: start it to open its console.").format(name=vm.name, state=state),
                409,
            )
        console = self._settings.console
        seconds = max(console.spice_password_validity, console.ticket_ttl + PASSWORD_MARGIN)
        validity = timedelta(seconds=seconds)
        try:
            async with self._vm_lock(vm_id):
                endpoint = await hv.spice_endpoint(vm.name)
                epoch = await self.epochs.extend(vm_id, validity)
                # Set even when the epoch goes on: the same password stays, its validity grows
                # (and a display restarted behind the dashboard's back gets it again).
                await hv.set_spice_password(vm.name, epoch.password, epoch.valid_until)
        except (InvalidDomainState, DomainNotFound) as exc:
            # It stopped between the state check and now.
            raise ConsoleError(
                "vm_not_running", _("{name} stopped: start it to open its console.").format(name=vm.name), 409
            ) from exc
        except NoSpiceDisplay as exc:
            # Asking again cannot help: the VM's definition (or its hypervisor's record) must change.
            raise ConsoleError(
                "no_spice_display",
                _("{name} has no SPICE display the dashboard may use: {exc}").format(name=vm.name, exc=exc),
                409,
            ) from exc
        except HypervisorError as exc:
            raise ConsoleError(
                "display_unavailable",
                _("The display of {name} is not available: {exc}").format(name=vm.name, exc=exc),
                502,
            ) from exc
        host, port, tls_port = endpoint.host, endpoint.port, endpoint.tls_port
        tls = self._registry.spice_tls
        # The ticket and its audit record are stored together, or neither is.
        async with self._db.transaction():
            issued = await self.tickets.issue(
                user_id=user_id, vm_id=vm_id, host=host, port=port, tls_port=tls_port
            )
            await self.audit.record(
                "console.open",
                actor=user.username,
                target=vm.name,
                client_address=client_address,
                vm_id=vm_id,
                ticket_id=issued.record.id,
                endpoint=_endpoint_text(endpoint),
                new_password=epoch.new,
            )
        return ConsoleGrant(
            vm_id=vm_id,
            vm_name=vm.name,
            user_id=user_id,
            ticket_id=issued.record.id,
            host=host,
            port=port,
            tls_port=tls_port,
            proxy_url=self.proxy_url(issued.secret, gateway_host),
            ticket=issued.secret,
            password=epoch.password,
            expires_at=issued.record.expires_at,
            password_valid_until=epoch.valid_until,
            websocket_path=console_websocket_path(vm_id),
            host_subject=tls.identity(hv.record).subject if tls_port is not None else None,
            ca=tls.ca.pem if tls_port is not None else None,
        )

    def proxy_url(self, ticket: str, gateway_host: str | None = None) -> str:
        gateway = self._settings.gateway
        host = gateway.public_host or gateway_host or gateway.host
        # The port clients use: a load balancer's (public_port), else the one listened on (the
        # configured one may be 0: any free port).
        port = gateway.public_port or (self.gateway.port if self.gateway is not None else gateway.port)
        return f"http://ticket:{ticket}@{_url_host(host)}:{port}"

    # -- open consoles ---------------------------------------------------------------------

    async def open_consoles(self) -> list[OpenConsole]:
        """Every open console session of the cluster (this replica's first)."""
        return [*self.local_consoles(), *await self._roster.sessions_elsewhere()]

    def local_consoles(self) -> list[OpenConsole]:
        return [
            OpenConsole(
                replica=self.replica,
                ticket_id=session.ticket.id,
                user_id=session.ticket.user_id,
                username=session.ticket.username,
                vm_id=session.ticket.vm_id,
                vm_name=session.ticket.vm_name,
                via=session.via,
                client_address=session.client_address,
                started_at=session.started_at.isoformat(),
            )
            for session in self.sessions.sessions()
            if session.end_reason is None and session.channels
        ]

    # -- revoking -------------------------------------------------------------------------

    async def revoke_for_vm(self, vm_id: int, reason: str) -> int:
        """Revoke every console ticket of VM ``vm_id``, close its open consoles (on every replica) and
        change its SPICE password (cutting off direct clients too); returns how many sessions closed here."""
        await self.tickets.revoke_for_vm(vm_id, reason)
        self._bus.publish(REVOKE_CHANNEL, {"kind": "vm", "id": vm_id, "reason": reason})
        closed = await self._close_here("vm", vm_id, reason)
        await self._new_epoch(vm_id, running=reason != reasons.VM_STOPPED.code)
        return closed

    async def revoke_for_user(self, user_id: int, reason: str) -> int:
        """Revoke every console ticket of user ``user_id``, close their open consoles and change the
        SPICE password of every VM whose current password they were given."""
        known = await self._vms_whose_password_user_knows(user_id)
        await self.tickets.revoke_for_user(user_id, reason)
        self._bus.publish(REVOKE_CHANNEL, {"kind": "user", "id": user_id, "reason": reason})
        closed = await self._close_here("user", user_id, reason)
        for vm_id in known:
            await self._new_epoch(vm_id)
        return closed

    async def revoke_ticket(self, ticket_id: int, reason: str) -> int:
        """Revoke one console ticket, close the console session opened with it and change the
        password it came with (every console of that VM is cut)."""
        vm_id = await self._db.fetch_val(
            sa.select(console_tickets.c.vm_id)
            .select_from(
                console_tickets.join(console_epochs, console_epochs.c.vm_id == console_tickets.c.vm_id)
            )
            .where(console_tickets.c.id == ticket_id, _IN_CURRENT_EPOCH)
        )
        await self.tickets.revoke(ticket_id, reason)
        self._bus.publish(REVOKE_CHANNEL, {"kind": "ticket", "id": ticket_id, "reason": reason})
        closed = await self._close_here("ticket", ticket_id, reason)
        if vm_id is not None:
            await self._new_epoch(int(vm_id))
        return closed

    async def _close_here(self, kind: str, target_id: int, reason: str) -> int:
        """Close this replica's consoles of a revoked VM, user or ticket (and audit it)."""
        close = {
            "vm": self.sessions.close_vm,
            "user": self.sessions.close_user,
            "ticket": self.sessions.close_ticket,
        }[kind]
        closed = close(target_id, close_reason_for(reason))
        if closed:
            await self.audit.record(
                "console.revoke", target=f"{kind}:{target_id}", reason=reason, sessions=closed
            )
        return closed

    async def _vms_whose_password_user_knows(self, user_id: int) -> list[int]:
        """VMs with a current epoch for which the user was issued a ticket (and so its password)."""
        rows = await fetch_records(
            self._db,
            _TicketVm,
            sa.select(console_tickets.c.vm_id)
            .distinct()
            .select_from(
                console_tickets.join(console_epochs, console_epochs.c.vm_id == console_tickets.c.vm_id)
            )
            .where(console_tickets.c.user_id == user_id, _IN_CURRENT_EPOCH),
        )
        return [row.vm_id for row in rows]

    async def _new_epoch(self, vm_id: int, *, running: bool = True) -> None:
        """End the VM's password epoch; on a running display, an unknown password and every client cut."""
        async with self._vm_lock(vm_id):
            await self.epochs.end(vm_id)
            if not running:
                return
            vm = await get_vm(self._db, vm_id)
            if vm is None:
                return
            try:
                hv = self._registry.get(vm.hypervisor_id)
                await hv.set_spice_password(vm.name, spice_password(), EXPIRED, disconnect=True)
            except (InvalidDomainState, DomainNotFound):
                return  # not running: nobody can connect, and its next start has an expired password
            except HypervisorError as exc:
                log.warning("could not change the SPICE password of %s after a revocation: %s", vm.name, exc)

    def _vm_lock(self, vm_id: int) -> asyncio.Lock:
        lock = self._vm_locks.get(vm_id)
        if lock is None:
            lock = self._vm_locks[vm_id] = asyncio.Lock()
        return lock

    async def _revoked_elsewhere(self, message: dict[str, Any]) -> None:
        kind, target_id = message.get("kind"), message.get("id")
        if kind in ("vm", "user", "ticket") and isinstance(target_id, int):
            await self._close_here(str(kind), target_id, str(message.get("reason") or "revoked"))

    async def close_revoked(self) -> int:
        """Close this replica's sessions whose ticket the database says is revoked (heartbeat backstop)."""
        open_ids = sorted(
            {session.ticket.id for session in self.sessions.sessions() if session.end_reason is None}
        )
        if not open_ids:
            return 0
        rows = await fetch_records(
            self._db,
            _Revoked,
            sa.select(console_tickets.c.id, console_tickets.c.revoke_reason).where(
                console_tickets.c.id.in_(open_ids), console_tickets.c.revoked_at.is_not(None)
            ),
        )
        closed = 0
        for row in rows:
            closed += await self._close_here("ticket", row.id, row.revoke_reason or "revoked")
        return closed

    def close_all_for_restart(self) -> int:
        """A draining replica: every console reconnects at once (through another replica)."""
        return self.sessions.close_all(reasons.RECONNECT)

    def connection_counts(self) -> tuple[int, dict[int, int]]:
        return self.sessions.connection_count, self.sessions.user_connection_counts()

    async def _vm_stopped(self, ticket: ConsoleTicket) -> bool | None:
        """Whether the ticket's VM has stopped (or is gone), as its hypervisor says; None: unknown."""
        vm = await get_vm(self._db, ticket.vm_id)
        if vm is None:
            return True
        try:
            state = await self._registry.get(vm.hypervisor_id).domain_state(vm.name)
        except DomainNotFound:
            return True
        except HypervisorError:
            return None
        return state in STOPPED_STATES

    async def _domain_changed(self, event: DomainEvent) -> None:
        if event.state not in STOPPED_STATES:
            return
        vm = await fetch_record(
            self._db,
            Vm,
            vms.select().where(vms.c.hypervisor_id == event.hypervisor_id).where(vms.c.name == event.name),
        )
        if vm is not None:
            await self.revoke_for_vm(vm.id, reasons.VM_STOPPED.code)

    async def _hypervisor_changed(self, event: ConnectionEvent) -> None:
        """A fenced hypervisor's consoles are closed with that reason at once, rather than hanging on
        a connection nobody answers. Tickets and leases stay: the desktop runs on, and its user
        reconnects once the hypervisor is back."""
        if event.state != "down":
            return
        on_it = await fetch_records(
            self._db, Identified, sa.select(vms.c.id).where(vms.c.hypervisor_id == event.hypervisor_id)
        )
        closed = sum(self.sessions.close_vm(vm.id, reasons.HYPERVISOR_DOWN) for vm in on_it)
        if closed:
            log.warning("closed %d consoles of desktops on %s: it is down", closed, event.name)
