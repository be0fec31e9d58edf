"""Retention: audit records and ended leases older than ``[audit] retention_days`` are deleted, and so
are dead API tokens and console tickets.

:func:`purge` is one pass on the time it is given: audit records written before the cut-off go (in
batches of :data:`BATCH` rows, so no statement holds the table long), and so do leases that ended
before it (the usage report reads leases, so it covers the same period as the audit log). API tokens
(the broker's log-in tokens and administrators' personal ones) that expired or were revoked more
than :data:`DEAD_GRACE` ago go, and so do console tickets expired that long ago: they authenticate
nothing any more (a console session's record is in the audit log). Each pass that deleted something
leaves one ``audit_purged`` record saying how much and up to when. ``retention_days = 0`` keeps
audit records and leases for ever (dead tokens and tickets still go).

:class:`RetentionPurger` runs :func:`purge` every ``interval`` seconds on the injected clock from
the lifespan. Running it twice at once is harmless (the second finds less to delete); with several
replicas it is a background duty all the same (:mod:`app.cluster.duties`): the replica holding the
duty lease purges, and one ``audit_purged`` record tells what went, not one per replica.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from databases import Database

from app.audit import AuditLog
from app.background import Periodic
from app.clock import Clock
from app.cluster.duties import Duties
from app.db.records import Identified, fetch_records
from app.db.schema import api_tokens, audit_log, console_tickets, leases

log = logging.getLogger("kvmvdi.retention")

BATCH = 1000
DEAD_GRACE = timedelta(days=1)
ACTION = "audit_purged"


@dataclass(frozen=True)
class Purged:
    audit_records: int
    api_tokens: int
    # Audit records written (and leases ended) before this (naive UTC) went; None: kept for ever.
    cutoff: datetime | None
    leases: int = 0
    console_tickets: int = 0

    def __bool__(self) -> bool:
        return bool(self.audit_records or self.api_tokens or self.leases or self.console_tickets)


async def _delete_in_batches(
    db: Database, table: sa.Table, condition: sa.ColumnElement[bool], batch: int
) -> int:
    """Delete the rows of ``table`` matching ``condition``, ``batch`` ids at a time; how many went."""
    deleted = 0
    while True:
        # Two statements: MariaDB takes no LIMIT in a subquery of DELETE ... WHERE id IN.
        ids = [
            row.id
            for row in await fetch_records(
                db, Identified, sa.select(table.c.id).where(condition).order_by(table.c.id).limit(batch)
            )
        ]
        if not ids:
            return deleted
        await db.execute(table.delete().where(table.c.id.in_(ids)))
        deleted += len(ids)
        if len(ids) < batch:
            return deleted


async def purge(db: Database, *, now: datetime, retention_days: int, batch: int = BATCH) -> Purged:
    """Delete what the retention rules say is gone at ``now`` (naive UTC)."""
    cutoff = now - timedelta(days=retention_days) if retention_days > 0 else None
    records = ended_leases = 0
    if cutoff is not None:
        records = await _delete_in_batches(
            db, audit_log, sa.and_(audit_log.c.at < cutoff, audit_log.c.action != ACTION), batch
        )
        ended_leases = await _delete_in_batches(
            db, leases, sa.and_(leases.c.ended_at.is_not(None), leases.c.ended_at < cutoff), batch
        )
        # The purge's own records are kept one retention period more: who removed what stays visible.
        await db.execute(
            audit_log.delete().where(
                audit_log.c.action == ACTION, audit_log.c.at < cutoff - timedelta(days=retention_days)
            )
        )
    dead = sa.or_(
        sa.and_(api_tokens.c.expires_at.is_not(None), api_tokens.c.expires_at < now - DEAD_GRACE),
        sa.and_(api_tokens.c.revoked_at.is_not(None), api_tokens.c.revoked_at < now - DEAD_GRACE),
    )
    tokens = int(await db.fetch_val(sa.select(sa.func.count()).select_from(api_tokens).where(dead)) or 0)
    if tokens:
        await db.execute(api_tokens.delete().where(dead))
    tickets = await _delete_in_batches(
        db, console_tickets, console_tickets.c.expires_at < now - DEAD_GRACE, batch
    )
    return Purged(records, tokens, cutoff, leases=ended_leases, console_tickets=tickets)


class RetentionPurger:
    def __init__(
        self,
        *,
        db: Database,
        clock: Clock,
        audit: AuditLog,
        retention_days: int,
        interval: float = 3600.0,
        duties: Duties | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.audit = audit
        self.retention_days = retention_days
        self._periodic = Periodic("retention purge", self.tick, interval)
        self._duties = duties

    async def start(self) -> None:
        if self._duties is not None and self._duties.clustered:
            self._duties.add("retention-purge", self._periodic.run)
        else:
            await self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    def wake(self) -> None:
        """Purge now (a test moved the clock)."""
        self._periodic.wake()

    async def tick(self) -> Purged:
        """One pass: purge, and audit what went."""
        purged = await purge(self.db, now=self.clock.now(), retention_days=self.retention_days)
        if purged:
            log.info(
                "purged %d audit records and %d ended leases (before %s), %d dead API tokens"
                " and %d dead console tickets",
                purged.audit_records,
                purged.leases,
                purged.cutoff,
                purged.api_tokens,
                purged.console_tickets,
            )
            await self.audit.record(
                ACTION,
                actor="retention",
                audit_records=purged.audit_records,
                leases=purged.leases,
                api_tokens=purged.api_tokens,
                console_tickets=purged.console_tickets,
                before=purged.cutoff.isoformat() if purged.cutoff else None,
                retention_days=self.retention_days,
            )
        return purged
