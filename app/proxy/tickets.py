"""Console tickets: short-lived secrets that let one console session reach one SPICE display.

A ticket is 256 random bits (``secrets.token_urlsafe(32)``) handed to exactly one
client (as an HttpOnly cookie for the browser console, or inside the ``proxy=``
URL of a ``.vv`` file). Only its SHA-256 is stored. It is bound to a user, a VM
and the display's endpoint, opens *new* connections for ``ticket_ttl`` seconds
(several SPICE channels of one session use it), and can be revoked at any time.
Whether a ticket is still valid is decided by the dashboard's clock (tests move
it forward instead of waiting).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from databases import Database

from app.clock import Clock
from app.db.records import Record, fetch_record
from app.db.schema import console_tickets, users, vms

# A ticket is a bearer secret: keep its window for new connections short.
MAX_TICKET_TTL = 60


def ticket_hash(secret: str) -> str:
    """What the database stores instead of the ticket."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _host_key(host: str) -> str:
    # "[::1]" in a CONNECT line is "::1" in a ticket; host names compare case-insensitively.
    return host.strip().strip("[]").lower()


@dataclass(frozen=True)
class ConsoleTicket(Record):
    """A ticket's record: everything but the secret."""

    id: int
    user_id: int
    username: str
    vm_id: int
    vm_name: str
    host: str
    # The display's plain port (None: TLS only) and TLS port (None: plain only).
    port: int | None
    tls_port: int | None
    expires_at: datetime

    def allows(self, host: str, port: int) -> bool:
        """Whether this ticket may reach ``host:port`` (its display's plain or TLS port, nothing else)."""
        if _host_key(host) != _host_key(self.host):
            return False
        return port in (self.port, self.tls_port)


@dataclass(frozen=True)
class IssuedTicket:
    secret: str
    record: ConsoleTicket


class TicketStore:
    def __init__(self, db: Database, *, ttl: int, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self.ttl = max(1, min(int(ttl), MAX_TICKET_TTL))

    async def issue(
        self, *, user_id: int, vm_id: int, host: str, port: int | None, tls_port: int | None = None
    ) -> IssuedTicket:
        if port is None and tls_port is None:
            raise ValueError("a console ticket needs the display's plain or TLS port")
        secret = secrets.token_urlsafe(32)
        now = self._clock.now()
        expires_at = now + timedelta(seconds=self.ttl)
        ticket_id = await self._db.execute(
            console_tickets.insert().values(
                token_hash=ticket_hash(secret),
                user_id=user_id,
                vm_id=vm_id,
                host=host,
                port=port,
                tls_port=tls_port,
                created_at=now,
                expires_at=expires_at,
            )
        )
        record = await self._fetch(console_tickets.c.id == int(ticket_id))
        if record is None:
            raise LookupError("the console ticket just written cannot be read back")
        return IssuedTicket(secret=secret, record=record)

    async def redeem(self, secret: str) -> ConsoleTicket | None:
        """The ticket's record if it may open a new connection now, else ``None``.

        Unknown, expired and revoked tickets, and tickets of disabled users, all
        look the same to the caller: no hint for someone guessing.
        """
        if not secret or len(secret) > 128:
            return None
        digest = ticket_hash(secret)
        record = await self._fetch(
            sa.and_(
                console_tickets.c.token_hash == digest,
                console_tickets.c.revoked_at.is_(None),
                console_tickets.c.expires_at > self._clock.now(),
                users.c.disabled == sa.false(),
            )
        )
        return record

    async def revoke(self, ticket_id: int, reason: str) -> None:
        await self._revoke(console_tickets.c.id == ticket_id, reason)

    async def revoke_for_vm(self, vm_id: int, reason: str) -> None:
        await self._revoke(console_tickets.c.vm_id == vm_id, reason)

    async def revoke_for_user(self, user_id: int, reason: str) -> None:
        await self._revoke(console_tickets.c.user_id == user_id, reason)

    async def _revoke(self, condition: sa.ColumnElement[bool], reason: str) -> None:
        await self._db.execute(
            console_tickets.update()
            .where(sa.and_(condition, console_tickets.c.revoked_at.is_(None)))
            .values(revoked_at=self._clock.now(), revoke_reason=reason[:64])
        )

    async def _fetch(self, condition: sa.ColumnElement[bool]) -> ConsoleTicket | None:
        query = (
            sa.select(
                console_tickets.c.id,
                console_tickets.c.user_id,
                users.c.username,
                console_tickets.c.vm_id,
                vms.c.name.label("vm_name"),
                console_tickets.c.host,
                console_tickets.c.port,
                console_tickets.c.tls_port,
                console_tickets.c.expires_at,
            )
            .select_from(
                console_tickets.join(users, users.c.id == console_tickets.c.user_id).join(
                    vms, vms.c.id == console_tickets.c.vm_id
                )
            )
            .where(condition)
        )
        return await fetch_record(self._db, ConsoleTicket, query)
