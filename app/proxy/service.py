"""``ConsoleService``: open a console (fresh SPICE password + console ticket), revoke consoles.

Opening a console of a running VM:

1. asks the VM's hypervisor for the SPICE endpoint the proxy connects to;
2. sets a fresh random SPICE password on the running domain, valid for
   ``console.spice_password_validity`` seconds (new connections only: SPICE
   checks it at link time). It goes to this one console and is never stored
   or logged;
3. issues a console ticket bound to the user, the VM and that endpoint.

Revoking (VM stopped, reassigned, session ended by an admin) marks the tickets
revoked and closes their open connections at once.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from databases import Database

from app.audit import AuditLog
from app.clock import utcnow
from app.db.schema import users, vms
from app.hyper import DomainEvent, HypervisorRegistry
from app.hyper.errors import DomainNotFound, HypervisorError, InvalidDomainState
from app.hyper.graphics import SpiceEndpoint
from app.proxy import sessions as reasons
from app.proxy.paths import console_websocket_path
from app.proxy.pump import ReadBuffer
from app.proxy.sessions import CloseReason, ConsoleSessions
from app.proxy.tickets import TicketStore
from app.settings import Settings

log = logging.getLogger("kvmvdi.proxy")

# Domain states in which a display can be shown (a paused VM still has its screen).
DISPLAY_STATES = frozenset({"running", "paused"})
# Domain states after which its consoles are over.
STOPPED_STATES = frozenset({"shutoff", "crashed", "pmsuspended", "undefined"})
# 32 characters: well inside SPICE's 60-byte ticket limit and its RSA-1024 OAEP block.
SPICE_PASSWORD_BYTES = 24


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
    port: int
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


def spice_password() -> str:
    return secrets.token_urlsafe(SPICE_PASSWORD_BYTES)


def close_reason_for(reason: str) -> CloseReason:
    if reason == reasons.VM_STOPPED.code:
        return reasons.VM_STOPPED
    return CloseReason(reason[:64] or reasons.REVOKED.code, reasons.REVOKED.ws_code, reasons.REVOKED.message)


def _endpoint_parts(endpoint: SpiceEndpoint) -> tuple[str, int, int | None]:
    """(host, port, tls_port) of a display; the TLS port only once the hypervisor layer reports one."""
    tls_port = getattr(endpoint, "tls_port", None)
    return str(endpoint.host), int(endpoint.port), (int(tls_port) if tls_port else None)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class ConsoleService:
    def __init__(
        self, *, db: Database, registry: HypervisorRegistry, settings: Settings, audit: AuditLog
    ) -> None:
        self._db = db
        self._registry = registry
        self._settings = settings
        self.audit = audit
        self.tickets = TicketStore(db, ttl=settings.console.ticket_ttl)
        self.sessions = ConsoleSessions(audit=audit, settings=settings.console)
        self.read_buffer = ReadBuffer(settings.console.read_size)
        # Set by the lifespan once the CONNECT gateway listens (its real port goes into proxy URLs).
        self.gateway_port: int | None = None
        self._unsubscribe: Callable[[], None] | None = None

    async def start(self) -> None:
        await self.sessions.start()
        self._unsubscribe = self._registry.add_domain_listener(self._domain_changed)
        purged = await self.tickets.purge(older_than=timedelta(days=1))
        if purged:
            log.info("purged %d old console tickets", purged)

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await self.sessions.stop()

    # -- opening --------------------------------------------------------------------------

    async def open(
        self, *, user_id: int, vm_id: int, client_address: str = "", gateway_host: str | None = None
    ) -> ConsoleGrant:
        """Open a console of VM ``vm_id`` for user ``user_id`` (who must be allowed: the caller checks).

        ``gateway_host`` is the host name the client used to reach the dashboard; it
        goes into the proxy URL unless ``gateway.public_host`` is configured.
        """
        vm: Any = await self._db.fetch_one(vms.select().where(vms.c.id == vm_id))
        if vm is None:
            raise ConsoleError("vm_not_found", f"VM {vm_id} does not exist.", 404)
        user: Any = await self._db.fetch_one(users.select().where(users.c.id == user_id))
        if user is None or user.disabled:
            raise ConsoleError("user_not_allowed", "This account may not open consoles.", 403)
        try:
            hv = self._registry.get(vm.hypervisor_id)
            state = await hv.domain_state(vm.name)
        except DomainNotFound as exc:
            raise ConsoleError("vm_not_defined", f"{vm.name} is not defined on its hypervisor.", 409) from exc
        except HypervisorError as exc:
            raise ConsoleError(
                "hypervisor_unavailable", f"The hypervisor of {vm.name} cannot be reached: {exc}", 503
            ) from exc
        if state not in DISPLAY_STATES:
            raise ConsoleError("vm_not_running", f"{vm.name} is {state}: start it to open its console.", 409)
        password = spice_password()
        valid_until = utcnow() + timedelta(seconds=self._settings.console.spice_password_validity)
        try:
            host, port, tls_port = _endpoint_parts(await hv.spice_endpoint(vm.name))
            await hv.set_spice_password(vm.name, password, valid_until)
        except (InvalidDomainState, DomainNotFound) as exc:
            # It stopped between the state check and now.
            raise ConsoleError(
                "vm_not_running", f"{vm.name} stopped: start it to open its console.", 409
            ) from exc
        except HypervisorError as exc:
            raise ConsoleError(
                "display_unavailable", f"The display of {vm.name} is not available: {exc}", 502
            ) from exc
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
            endpoint=f"{_url_host(host)}:{port}",
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
            password=password,
            expires_at=issued.record.expires_at,
            password_valid_until=valid_until,
            websocket_path=console_websocket_path(vm_id),
        )

    def proxy_url(self, ticket: str, gateway_host: str | None = None) -> str:
        gateway = self._settings.gateway
        host = gateway.public_host or gateway_host or gateway.host
        port = self.gateway_port or gateway.port
        return f"http://ticket:{ticket}@{_url_host(host)}:{port}"

    # -- revoking -------------------------------------------------------------------------

    async def revoke_for_vm(self, vm_id: int, reason: str) -> int:
        """Revoke every console ticket of VM ``vm_id`` and close its open consoles; returns how many."""
        await self.tickets.revoke_for_vm(vm_id, reason)
        closed = self.sessions.close_vm(vm_id, close_reason_for(reason))
        if closed:
            await self.audit.record("console.revoke", target=f"vm:{vm_id}", reason=reason, sessions=closed)
        return closed

    async def revoke_for_user(self, user_id: int, reason: str) -> int:
        """Revoke every console ticket of user ``user_id`` and close their open consoles."""
        await self.tickets.revoke_for_user(user_id, reason)
        closed = self.sessions.close_user(user_id, close_reason_for(reason))
        if closed:
            await self.audit.record(
                "console.revoke", target=f"user:{user_id}", reason=reason, sessions=closed
            )
        return closed

    async def revoke_ticket(self, ticket_id: int, reason: str) -> int:
        """Revoke one console ticket and close the console session opened with it."""
        await self.tickets.revoke(ticket_id, reason)
        closed = self.sessions.close_ticket(ticket_id, close_reason_for(reason))
        if closed:
            await self.audit.record(
                "console.revoke", target=f"ticket:{ticket_id}", reason=reason, sessions=closed
            )
        return closed

    async def _domain_changed(self, event: DomainEvent) -> None:
        if event.state not in STOPPED_STATES:
            return
        row: Any = await self._db.fetch_one(
            vms.select().where(vms.c.hypervisor_id == event.hypervisor_id).where(vms.c.name == event.name)
        )
        if row is not None:
            await self.revoke_for_vm(int(row.id), reasons.VM_STOPPED.code)
