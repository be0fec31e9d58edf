"""Live console sessions: connection limits, timeouts, revocation and accounting.

A console session is every proxied connection (SPICE channel) opened with one
console ticket, whether through the browser websocket or the CONNECT gateway.
It starts with its first channel and ends with its last; then exactly one
``console.session`` audit record is written (user, VM, from, start, end, bytes
each way). Idle sessions and sessions older than ``console.max_session`` are
closed by a periodic check; revoking a ticket, a VM or a user closes theirs.

When a display hangs up on its own, its VM may have stopped: qemu closes its SPICE
sockets before libvirt's stop event reaches the dashboard (and that event is
handled after database work). Then the session asks the VM's hypervisor, for up
to ``DISPLAY_HANGUP_GRACE`` seconds, whether the VM stopped, unless the stop
event (or a revocation) arrives first; only then is the client told the reason
and the session's end recorded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from app.audit import AuditLog
from app.clock import utcnow
from app.cluster.census import ConsoleRoster, NoPeers
from app.i18n import gettext as _
from app.observers import Observers
from app.proxy.tickets import ConsoleTicket
from app.settings import ConsoleSettings

log = logging.getLogger("kvmvdi.proxy")

# How long a display's hang-up waits for the reason (the VM's stop event, a revocation, or its
# hypervisor saying the VM stopped) before the client is told the display closed the connection.
DISPLAY_HANGUP_GRACE = 2.0
# While the hypervisor still says the VM runs (it may not have noticed qemu exit yet), ask again
# this often within the grace.
HANGUP_PROBE_INTERVAL = 0.2


@dataclass(frozen=True)
class CloseReason:
    """Why the proxy ended a connection: a stable code for the audit log and a websocket close code."""

    code: str
    ws_code: int
    message: str


# 4000-4999 are application close codes: the console page tells its user what happened.
TICKET_INVALID = CloseReason("ticket_invalid", 4401, "The console ticket is invalid or expired.")
WRONG_VM = CloseReason("wrong_vm", 4403, "The console ticket belongs to another desktop.")
VM_STOPPED = CloseReason("vm_stopped", 4404, "The desktop was stopped.")
IDLE = CloseReason("idle_timeout", 4408, "The console was idle for too long.")
MAX_SESSION = CloseReason("max_session", 4409, "The console session reached its maximum length.")
REVOKED = CloseReason("revoked", 4410, "The console session was ended by an administrator.")
TOO_MANY = CloseReason("too_many_connections", 4429, "Too many console connections are open.")
UNREACHABLE = CloseReason("unreachable", 4502, "The desktop's display cannot be reached.")
HYPERVISOR_DOWN = CloseReason(
    "hypervisor_down", 4503, "The server running this desktop stopped answering: reconnect once it is back."
)
SHUTDOWN = CloseReason("shutdown", 1001, "The dashboard is shutting down.")
# A replica about to stop: the console page reconnects at once (through another replica), as an
# HTTP 307 sends a client elsewhere.
RECONNECT = CloseReason("reconnect", 4307, "The dashboard is restarting: reconnecting.")
CLIENT_CLOSED = CloseReason("client_closed", 1000, "")
VM_CLOSED = CloseReason("vm_closed", 1000, "")

# Whether a ticket's VM has stopped (or is gone), asked of its hypervisor: None when unknown.
VmStopped = Callable[[ConsoleTicket], Awaitable[bool | None]]


class Channel(Protocol):
    """One proxied connection (a SPICE channel), whichever gateway carries it."""

    @property
    def bytes_to_client(self) -> int: ...

    @property
    def bytes_to_vm(self) -> int: ...

    @property
    def last_activity(self) -> float: ...

    @property
    def display_hung_up(self) -> bool:
        """Whether the display side closed first (not the client, not the proxy)."""
        ...

    def close(self, reason: CloseReason) -> None: ...


class Refused(Exception):
    """A new channel may not join: a connection limit, or its session is being closed."""

    def __init__(self, reason: CloseReason, detail: str = "") -> None:
        super().__init__(detail or reason.message)
        self.reason = reason


@dataclass(eq=False)
class ConsoleSession:
    ticket: ConsoleTicket
    client_address: str
    via: str
    started_at: datetime
    started: float
    channels: set[Channel] = field(default_factory=set)
    connections: int = 0
    # Totals of the channels that already closed.
    closed_bytes_to_client: int = 0
    closed_bytes_to_vm: int = 0
    last_closed_activity: float = 0.0
    end_reason: CloseReason | None = None
    # Set when end_reason is: what an inquiry into a display's hang-up waits for.
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    # Finding out why a display hung up: one per session, its channels share the answer.
    inquiry: asyncio.Task[CloseReason] | None = None

    @property
    def bytes_to_client(self) -> int:
        return self.closed_bytes_to_client + sum(c.bytes_to_client for c in self.channels)

    @property
    def bytes_to_vm(self) -> int:
        return self.closed_bytes_to_vm + sum(c.bytes_to_vm for c in self.channels)

    @property
    def last_activity(self) -> float:
        return max([self.last_closed_activity, self.started, *(c.last_activity for c in self.channels)])

    def close(self, reason: CloseReason) -> None:
        if self.end_reason is None:
            self.end_reason = reason
            self.closing.set()
        for channel in list(self.channels):
            channel.close(reason)


@dataclass(frozen=True)
class EndedSession:
    """A console session that just ended, as listeners (metrics) see it."""

    via: str
    seconds: float
    bytes_to_client: int
    bytes_to_vm: int
    end_reason: str


# Called when a session ends, synchronously: its bytes leave the open sessions at the same moment.
SessionListener = Callable[[EndedSession], None]


class ConsoleSessions:
    """The registry of open console sessions of this dashboard process."""

    def __init__(
        self,
        *,
        audit: AuditLog,
        settings: ConsoleSettings,
        clock: Callable[[], float] = time.monotonic,
        vm_stopped: VmStopped,
        listeners: Sequence[SessionListener] = (),
        peers: ConsoleRoster | None = None,
        hangup_grace: float = DISPLAY_HANGUP_GRACE,
    ) -> None:
        self._audit = audit
        self._vm_stopped = vm_stopped
        self._hangup_grace = hangup_grace
        self._settings = settings
        self._clock = clock
        self._listeners = Observers("console session", listeners)
        # The other replicas' connections count against the limits too (as of their last heartbeat).
        self._peers = peers or NoPeers()
        self._sessions: dict[int, ConsoleSession] = {}
        self._per_user: dict[int, int] = {}
        self._total = 0
        self._ticker: asyncio.Task[None] | None = None
        self._pending_audit: set[asyncio.Task[None]] = set()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._ticker = asyncio.create_task(self._enforce_timeouts(), name="console-timeouts")

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
            self._ticker = None
        for session in list(self._sessions.values()):
            session.close(SHUTDOWN)
        # Channels detach from their own tasks and callbacks; give them a moment to do so.
        for _attempt in range(100):
            if not self._sessions:
                break
            await asyncio.sleep(0.02)
        for session in list(self._sessions.values()):
            self._end(session)
        if self._pending_audit:
            await asyncio.gather(*self._pending_audit, return_exceptions=True)

    # -- channels -------------------------------------------------------------------------

    def admit(
        self, ticket: ConsoleTicket, channel: Channel, *, client_address: str, via: str
    ) -> ConsoleSession:
        """Count ``channel`` in its ticket's session (started if needed), or raise :class:`Refused`."""
        if self._total + self._peers.connections_elsewhere() >= self._settings.global_limit:
            raise Refused(TOO_MANY, _("global console connection limit reached"))
        user_count = self._per_user.get(ticket.user_id, 0) + self._peers.user_connections_elsewhere(
            ticket.user_id
        )
        if user_count >= self._settings.per_user_limit:
            raise Refused(TOO_MANY, "per-user console connection limit reached")
        session = self._sessions.get(ticket.id)
        if session is not None and session.end_reason is not None:
            raise Refused(session.end_reason)
        if session is None:
            session = ConsoleSession(
                ticket=ticket,
                client_address=client_address,
                via=via,
                started_at=utcnow(),
                started=self._clock(),
            )
            self._sessions[ticket.id] = session
        session.channels.add(channel)
        session.connections += 1
        self._total += 1
        self._per_user[ticket.user_id] = self._per_user.get(ticket.user_id, 0) + 1
        return session

    def release(self, session: ConsoleSession, channel: Channel) -> None:
        """``channel`` closed: account for it, and end the session with its last channel (once the
        reason is known, when a display hung up)."""
        if channel not in session.channels:
            return
        if channel.display_hung_up:
            self._inquire(session)
        session.channels.discard(channel)
        session.closed_bytes_to_client += channel.bytes_to_client
        session.closed_bytes_to_vm += channel.bytes_to_vm
        session.last_closed_activity = max(session.last_closed_activity, channel.last_activity)
        self._total -= 1
        user_id = session.ticket.user_id
        remaining = self._per_user.get(user_id, 1) - 1
        if remaining > 0:
            self._per_user[user_id] = remaining
        else:
            self._per_user.pop(user_id, None)
        if not session.channels:
            inquiry = session.inquiry
            if inquiry is not None and not inquiry.done():
                inquiry.add_done_callback(lambda _done: self._end_if_idle(session))
            else:
                self._end(session)

    def display_hung_up(self, ticket_id: int) -> Awaitable[CloseReason]:
        """A channel of ticket ``ticket_id`` saw its display hang up: the reason to tell its client,
        known within ``hangup_grace`` seconds (``VM_CLOSED`` when the VM still runs)."""
        session = self._sessions.get(ticket_id)
        if session is None:
            answered: asyncio.Future[CloseReason] = asyncio.get_running_loop().create_future()
            answered.set_result(VM_CLOSED)
            return answered
        # Shielded: a client leaving while it waits does not end the session's inquiry.
        return asyncio.shield(self._inquire(session))

    # -- closing --------------------------------------------------------------------------

    def close_ticket(self, ticket_id: int, reason: CloseReason) -> int:
        return self._close_where(lambda s: s.ticket.id == ticket_id, reason)

    def close_vm(self, vm_id: int, reason: CloseReason) -> int:
        return self._close_where(lambda s: s.ticket.vm_id == vm_id, reason)

    def close_user(self, user_id: int, reason: CloseReason) -> int:
        return self._close_where(lambda s: s.ticket.user_id == user_id, reason)

    def close_all(self, reason: CloseReason) -> int:
        return self._close_where(lambda s: True, reason)

    def _close_where(self, predicate: Callable[[ConsoleSession], bool], reason: CloseReason) -> int:
        chosen = [s for s in self._sessions.values() if predicate(s)]
        for session in chosen:
            session.close(reason)
        return len(chosen)

    # -- views ----------------------------------------------------------------------------

    def sessions(self) -> list[ConsoleSession]:
        return list(self._sessions.values())

    @property
    def connection_count(self) -> int:
        return self._total

    def user_connection_count(self, user_id: int) -> int:
        return self._per_user.get(user_id, 0)

    def user_connection_counts(self) -> dict[int, int]:
        return dict(self._per_user)

    # -- internals ------------------------------------------------------------------------

    def _inquire(self, session: ConsoleSession) -> asyncio.Task[CloseReason]:
        if session.inquiry is None:
            session.inquiry = asyncio.get_running_loop().create_task(
                self._why_hung_up(session), name=f"console-hangup-{session.ticket.id}"
            )
        return session.inquiry

    async def _why_hung_up(self, session: ConsoleSession) -> CloseReason:
        """Wait for the session's reason (the stop event, a revocation) while asking the VM's
        hypervisor whether it stopped; a stopped VM closes the session as ``VM_STOPPED``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._hangup_grace
        closing = loop.create_task(session.closing.wait())
        try:
            while session.end_reason is None and (left := deadline - loop.time()) > 0:
                probe = asyncio.ensure_future(self._vm_stopped(session.ticket))
                done, _ = await asyncio.wait(
                    {probe, closing}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                if probe not in done:
                    probe.cancel()
                    continue
                failure = probe.exception()
                if failure is not None:
                    log.warning("could not ask whether %s stopped: %s", session.ticket.vm_name, failure)
                elif probe.result():
                    session.close(VM_STOPPED)
                    break
                await asyncio.wait(
                    {closing}, timeout=min(HANGUP_PROBE_INTERVAL, max(0.0, deadline - loop.time()))
                )
        finally:
            closing.cancel()
        return session.end_reason or VM_CLOSED

    def _end_if_idle(self, session: ConsoleSession) -> None:
        # A channel may have joined while the reason was being found out: the session goes on.
        if not session.channels:
            self._end(session)

    def _end(self, session: ConsoleSession) -> None:
        if self._sessions.get(session.ticket.id) is not session:
            return
        del self._sessions[session.ticket.id]
        reason = session.end_reason
        ended_at = utcnow()
        details = {
            "vm_id": session.ticket.vm_id,
            "ticket_id": session.ticket.id,
            "via": session.via,
            "channels": session.connections,
            "started_at": session.started_at.isoformat(),
            "ended_at": ended_at.isoformat(),
            "seconds": round(self._clock() - session.started, 3),
            "bytes_to_client": session.bytes_to_client,
            "bytes_to_vm": session.bytes_to_vm,
            "end_reason": reason.code if reason else "closed",
        }
        self._listeners(
            EndedSession(
                via=session.via,
                seconds=self._clock() - session.started,
                bytes_to_client=session.bytes_to_client,
                bytes_to_vm=session.bytes_to_vm,
                end_reason=str(details["end_reason"]),
            )
        )
        task = asyncio.get_running_loop().create_task(self._record(session, details))
        self._pending_audit.add(task)
        task.add_done_callback(self._pending_audit.discard)

    async def _record(self, session: ConsoleSession, details: dict[str, object]) -> None:
        try:
            await self._audit.record(
                "console.session",
                actor=session.ticket.username,
                target=session.ticket.vm_name,
                client_address=session.client_address,
                **details,
            )
        except Exception:
            log.exception("could not write the audit record of console session %s", session.ticket.id)

    async def _enforce_timeouts(self) -> None:
        idle = self._settings.idle_timeout
        longest = self._settings.max_session
        interval = max(0.2, min(5.0, idle / 4, longest / 4))
        while True:
            await asyncio.sleep(interval)
            now = self._clock()
            for session in list(self._sessions.values()):
                if now - session.started >= longest:
                    session.close(MAX_SESSION)
                elif now - session.last_activity >= idle:
                    session.close(IDLE)
