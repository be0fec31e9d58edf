"""Live console sessions: connection limits, timeouts, revocation and accounting.

A console session is every proxied connection (SPICE channel) opened with one
console ticket, whether through the browser websocket or the CONNECT gateway.
It starts with its first channel and ends with its last; then exactly one
``console.session`` audit record is written (user, VM, from, start, end, bytes
each way). Idle sessions and sessions older than ``console.max_session`` are
closed by a periodic check; revoking a ticket, a VM or a user closes theirs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
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


class Channel(Protocol):
    """One proxied connection (a SPICE channel), whichever gateway carries it."""

    @property
    def bytes_to_client(self) -> int: ...

    @property
    def bytes_to_vm(self) -> int: ...

    @property
    def last_activity(self) -> float: ...

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
        listeners: Sequence[SessionListener] = (),
        peers: ConsoleRoster | None = None,
    ) -> None:
        self._audit = audit
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
        """``channel`` closed: account for it, and end the session with its last channel."""
        if channel not in session.channels:
            return
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
            self._end(session)

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
