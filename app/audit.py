"""The audit log: who did what, to what, when, from where. Never secrets.

Text from outside (a typed user name, an address) is stored and logged with its
control characters escaped (:mod:`app.escaping`). Records anyone can cause
without an account (failed log-ins, garbage console tickets) go through
:meth:`AuditLog.record_unauthenticated`: at most ``limit`` rows per window, the
rest only counted, and the count written as one ``audit_suppressed`` row when
the window ends; a guessing flood cannot grow the table without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from databases import Database

from app.clock import utcnow
from app.db.records import Record, fetch_records
from app.db.schema import audit_log
from app.escaping import escape_controls
from app.observers import Observers

log = logging.getLogger("kvmvdi.audit")

# Keys whose values must never be written, whatever a caller passes in.
_SECRET_KEYS = frozenset({"password", "passwd", "ticket", "token", "secret", "spice_password"})


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return escape_controls(value)
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {escape_controls(str(k)): _clean(v) for k, v in value.items()}
    return value


def _scrub(details: dict[str, Any]) -> dict[str, Any]:
    return {
        escape_controls(k): ("[redacted]" if k.lower() in _SECRET_KEYS else _clean(v))
        for k, v in details.items()
    }


@dataclass(frozen=True)
class AuditEntry:
    """One recorded action, as listeners see it (details already scrubbed)."""

    action: str
    actor: str
    target: str
    client_address: str
    details: dict[str, Any]


# Called after each record is written; must not block (count, enqueue, nothing more).
AuditListener = Callable[[AuditEntry], None]


@dataclass(frozen=True)
class AuditRecord(Record):
    """An ``audit_log`` row as read back (the page and the tests show these)."""

    __table__ = audit_log

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    client_address: str
    details_json: str


class AuditLog:
    def __init__(
        self,
        db: Database,
        *,
        listeners: Sequence[AuditListener] = (),
        unauthenticated_limit: int = 120,
        unauthenticated_window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._listeners = Observers("audit", listeners)
        self.unauthenticated_limit = unauthenticated_limit
        self.unauthenticated_window = unauthenticated_window
        self._clock = clock
        self._window_start = clock()
        self._written = 0
        self._suppressed: Counter[str] = Counter()
        # Every record ever left out, by action (the rows say it per window).
        self.suppressed_total: Counter[str] = Counter()
        self._flush: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def record(
        self,
        action: str,
        *,
        actor: str = "",
        target: str = "",
        client_address: str = "",
        **details: Any,
    ) -> None:
        clean = _scrub(details)
        actor, target, client_address = (escape_controls(v) for v in (actor, target, client_address))
        # Cut to the column sizes: a user name typed into a log-in form can be any length.
        await self._db.execute(
            audit_log.insert().values(
                at=utcnow(),
                actor=actor[:128],
                action=action[:64],
                target=target[:255],
                client_address=client_address[:64],
                details_json=json.dumps(clean, default=str, sort_keys=True),
            )
        )
        log.info("%s actor=%s target=%s from=%s %s", action, actor, target, client_address, clean)
        if self._listeners:
            self._listeners(AuditEntry(action, actor, target, client_address, clean))

    async def record_unauthenticated(
        self, action: str, *, actor: str = "", client_address: str = "", **details: Any
    ) -> None:
        """Like :meth:`record`, within the rate limit for what anyone can cause."""
        now = self._clock()
        if now - self._window_start >= self.unauthenticated_window:
            await self._write_suppressed()
            self._window_start, self._written = now, 0
        if self._written < self.unauthenticated_limit:
            self._written += 1
            await self.record(action, actor=actor, client_address=client_address, **details)
            return
        if not self._suppressed:
            log.warning(
                "more than %d unauthenticated failures in %g s: further ones are counted, not written",
                self.unauthenticated_limit,
                self.unauthenticated_window,
            )
            self._schedule_flush(self._window_start + self.unauthenticated_window - now)
        self._suppressed[action] += 1
        self.suppressed_total[action] += 1
        if self._listeners:
            # Not written, but counted by whoever listens (metrics count every failed log-in).
            clean = _scrub(details)
            actor, client_address = escape_controls(actor), escape_controls(client_address)
            self._listeners(AuditEntry(action, actor, "", client_address, clean))

    def _schedule_flush(self, delay: float) -> None:
        # The count is written when the window ends even if no further failure comes.
        with contextlib.suppress(RuntimeError):
            loop = asyncio.get_running_loop()
            self._flush = loop.call_later(max(delay, 0.0), self._start_flush)

    def _start_flush(self) -> None:
        self._flush = None
        task = asyncio.ensure_future(self._write_suppressed())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write_suppressed(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if not self._suppressed:
            return
        counts, self._suppressed = dict(self._suppressed), Counter()
        try:
            await self.record("audit_suppressed", counts=counts, window_seconds=self.unauthenticated_window)
        except Exception:
            log.exception("could not write the count of suppressed audit records: %s", counts)

    async def close(self) -> None:
        """Write what is still only counted (at shutdown)."""
        await self._write_suppressed()
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task

    async def recent(
        self, *, limit: int = 100, action: str | None = None, since: datetime | None = None
    ) -> list[dict[str, Any]]:
        query = audit_log.select().order_by(audit_log.c.id.desc()).limit(limit)
        if action is not None:
            query = query.where(audit_log.c.action == action)
        if since is not None:
            query = query.where(audit_log.c.at >= since)
        entries = await fetch_records(self._db, AuditRecord, query)
        return [{**asdict(entry), "details": json.loads(entry.details_json)} for entry in entries]
