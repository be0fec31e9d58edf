"""The audit log: who did what, to what, when, from where. Never secrets."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from databases import Database

from app.clock import utcnow
from app.db.schema import audit_log
from app.observers import Observers

log = logging.getLogger("kvmvdi.audit")

# Keys whose values must never be written, whatever a caller passes in.
_SECRET_KEYS = frozenset({"password", "passwd", "ticket", "token", "secret", "spice_password"})


def _scrub(details: dict[str, Any]) -> dict[str, Any]:
    return {k: ("[redacted]" if k.lower() in _SECRET_KEYS else v) for k, v in details.items()}


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


class AuditLog:
    def __init__(self, db: Database, *, listeners: Sequence[AuditListener] = ()) -> None:
        self._db = db
        self._listeners = Observers("audit", listeners)

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

    async def recent(
        self, *, limit: int = 100, action: str | None = None, since: datetime | None = None
    ) -> list[dict[str, Any]]:
        query = audit_log.select().order_by(audit_log.c.id.desc()).limit(limit)
        if action is not None:
            query = query.where(audit_log.c.action == action)
        if since is not None:
            query = query.where(audit_log.c.at >= since)
        rows: list[Any] = await self._db.fetch_all(query)
        return [{**dict(row._mapping), "details": json.loads(row.details_json)} for row in rows]
