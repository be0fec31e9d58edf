"""Reading the audit log back: filters and keyset paging, newest first.

Pages are cut by id (``before``: the last id the previous page showed), never by offset,
so a page costs the same however deep it is and rows written meanwhile shift nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from databases import Database

from app.db.schema import audit_log


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    action: str | None = None
    target: str | None = None
    # at >= since and at < until (naive UTC, as stored)
    since: datetime | None = None
    until: datetime | None = None
    # a pool: records whose target it is, or that name it in their details (a desktop handed out of
    # it by name, a request it refused by id)
    pool_name: str | None = None
    pool_id: int | None = None
    # only ids below this one: the next page after the one that ended with it
    before: int | None = None
    limit: int = 100


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    client_address: str
    details: dict[str, Any]


@dataclass(frozen=True)
class AuditPage:
    records: list[AuditRecord]
    # pass as ``before`` for the next page; None on the last page
    next_before: int | None


def _conditions(wanted: AuditFilter) -> list[sa.ColumnElement[bool]]:
    found: list[sa.ColumnElement[bool]] = []
    for column, value in (
        (audit_log.c.actor, wanted.actor),
        (audit_log.c.action, wanted.action),
        (audit_log.c.target, wanted.target),
    ):
        if value:
            found.append(column == value)
    if wanted.pool_name:
        found.append(_names_pool(wanted.pool_name, wanted.pool_id))
    if wanted.since is not None:
        found.append(audit_log.c.at >= wanted.since)
    if wanted.until is not None:
        found.append(audit_log.c.at < wanted.until)
    if wanted.before is not None:
        found.append(audit_log.c.id < wanted.before)
    return found


def _names_pool(name: str, pool_id: int | None) -> sa.ColumnElement[bool]:
    # Details are written by json.dumps with sorted keys and its default separators: a pool appears
    # in them exactly so, and LIKE finds it on either database (no JSON functions they share).
    texts = [f'"pool": {json.dumps(name)}']
    if pool_id is not None:
        texts += [f'"pool_id": {pool_id},', f'"pool_id": {pool_id}}}']
    return sa.or_(audit_log.c.target == name, *(_holds(text) for text in texts))


def _holds(text: str) -> sa.ColumnElement[bool]:
    # The pattern is a bound value: a literal % in the SQL text would upset the database driver.
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return audit_log.c.details_json.like(f"%{escaped}%", escape="\\")


async def audit_page(db: Database, wanted: AuditFilter) -> AuditPage:
    """One page of the records ``wanted`` names, newest first."""
    query = (
        audit_log.select()
        .where(sa.and_(sa.true(), *_conditions(wanted)))
        .order_by(audit_log.c.id.desc())
        .limit(wanted.limit + 1)
    )
    rows = await db.fetch_all(query)
    records = [_record(row) for row in rows[: wanted.limit]]
    more = len(rows) > wanted.limit
    return AuditPage(records, records[-1].id if more and records else None)


def _record(row: Any) -> AuditRecord:
    try:
        details = json.loads(row.details_json)
    except ValueError:  # written by hand or by an older version: show it, do not fail
        details = {"text": row.details_json}
    return AuditRecord(
        id=row.id,
        at=row.at,
        actor=row.actor,
        action=row.action,
        target=row.target,
        client_address=row.client_address,
        details=details if isinstance(details, dict) else {"value": details},
    )
