"""Retention: audit records older than ``[audit] retention_days`` and dead API tokens are deleted.

:func:`purge` is one pass on the time it is given: audit records written before the cut-off go (in
batches of :data:`BATCH` rows, so no statement holds the table long), and so do API tokens (the
broker's log-in tokens and administrators' personal ones) that expired or were revoked more than
:data:`TOKEN_GRACE` ago: they authenticate nothing any more. Each pass that deleted something
leaves one ``audit_purged`` record saying how much and up to when. ``retention_days = 0`` keeps
audit records for ever (dead tokens still go).

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
from app.db.schema import api_tokens, audit_log

log = logging.getLogger("kvmvdi.retention")

BATCH = 1000
TOKEN_GRACE = timedelta(days=1)
ACTION = "audit_purged"


@dataclass(frozen=True)
class Purged:
    audit_records: int
    api_tokens: int
    # Audit records written before this (naive UTC) went; None when they are kept for ever.
    cutoff: datetime | None

    def __bool__(self) -> bool:
        return bool(self.audit_records or self.api_tokens)


async def purge(db: Database, *, now: datetime, retention_days: int, batch: int = BATCH) -> Purged:
    """Delete what the retention rules say is gone at ``now`` (naive UTC)."""
    cutoff = now - timedelta(days=retention_days) if retention_days > 0 else None
    records = 0
    if cutoff is not None:
        while True:
            # Two statements: MariaDB takes no LIMIT in a subquery of DELETE ... WHERE id IN.
            ids = [
                row.id
                for row in await fetch_records(
                    db,
                    Identified,
                    sa.select(audit_log.c.id)
                    .where(audit_log.c.at < cutoff, audit_log.c.action != ACTION)
                    .order_by(audit_log.c.id)
                    .limit(batch),
                )
            ]
            if not ids:
                break
            await db.execute(audit_log.delete().where(audit_log.c.id.in_(ids)))
            records += len(ids)
            if len(ids) < batch:
                break
        # The purge's own records are kept one retention period more: who removed what stays visible.
        await db.execute(
            audit_log.delete().where(
                audit_log.c.action == ACTION, audit_log.c.at < cutoff - timedelta(days=retention_days)
            )
        )
    dead = sa.or_(
        sa.and_(api_tokens.c.expires_at.is_not(None), api_tokens.c.expires_at < now - TOKEN_GRACE),
        sa.and_(api_tokens.c.revoked_at.is_not(None), api_tokens.c.revoked_at < now - TOKEN_GRACE),
    )
    tokens = int(await db.fetch_val(sa.select(sa.func.count()).select_from(api_tokens).where(dead)) or 0)
    if tokens:
        await db.execute(api_tokens.delete().where(dead))
    return Purged(records, tokens, cutoff)


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
                "purged %d audit records (before %s) and %d dead API tokens",
                purged.audit_records,
                purged.cutoff,
                purged.api_tokens,
            )
            await self.audit.record(
                ACTION,
                actor="retention",
                audit_records=purged.audit_records,
                api_tokens=purged.api_tokens,
                before=purged.cutoff.isoformat() if purged.cutoff else None,
                retention_days=self.retention_days,
            )
        return purged
