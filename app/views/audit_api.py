"""The audit log through the admin API: ``GET /api/v1/admin/audit`` (filters, keyset pages)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api.admin_models import AuditPageOut, AuditRecordOut
from app.api.describe import describe
from app.api.out import answer
from app.api.queries import AuditQuery
from app.api.reader import read_query
from app.audit_query import AuditFilter, audit_page
from app.services import services_of
from app.views.guards import admin_api


def _stored(value: datetime | None) -> datetime | None:
    """Stored times are naive UTC; a time with a zone is converted, one without is UTC."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


@admin_api
@describe(
    "Audit records, newest first: filter by actor, action, target and time; page with before",
    query=AuditQuery,
    responses={200: AuditPageOut},
)
async def query(request: Request) -> Response:
    wanted = read_query(request, AuditQuery)
    page = await audit_page(
        services_of(request).db,
        AuditFilter(
            actor=wanted.actor,
            action=wanted.action,
            target=wanted.target,
            since=_stored(wanted.since),
            until=_stored(wanted.until),
            before=wanted.before,
            limit=wanted.limit,
        ),
    )
    records = [AuditRecordOut(**asdict(record)) for record in page.records]
    return answer(AuditPageOut(records=records, next_before=page.next_before))


routes = [Route("/api/v1/admin/audit", query, methods=["GET"])]
