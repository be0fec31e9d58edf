"""The Audit page: who did what, to what, when; filtered, paged newest first, and as CSV.

The records come from :mod:`app.audit_query` (the admin API's ``/api/v1/admin/audit`` reads the
same). Filters arrive in the query string: ``user``, ``vm``, ``pool`` (a pool's id), ``action``,
``since`` and ``until`` (UTC, as the page shows times), ``before`` (the next page).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from app.api.describe import CSV, describe
from app.api.describe import PAGE as HTML_PAGE
from app.api.forms import AuditPageQuery
from app.audit_query import AuditFilter, AuditRecord, audit_page
from app.broker import pools as pool_store
from app.db.records import Named, fetch_records
from app.db.schema import audit_log
from app.i18n import gettext as _
from app.services import services_of
from app.views.forms import render
from app.views.guards import admin_required

PAGE = 50
# A CSV export stops here (newest first): a larger one is asked for with a time range.
CSV_LIMIT = 100_000
CSV_COLUMNS = ("id", "at", "actor", "action", "target", "client_address", "details")
# Cells a spreadsheet would run as formulas (a user name typed at log-in can be anything).
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


# A row id as a query gives it: ASCII digits, small enough for a BIGINT.
_ID = re.compile(r"[0-9]{1,18}")


def _utc(moment: datetime) -> datetime:
    """Naive UTC, as stored: a time with an offset is converted, one without is taken as UTC."""
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class _Asked:
    wanted: AuditFilter
    # The filters as the form shows them (and the links carry them on).
    shown: dict[str, str]
    error: str


async def _asked(request: Request, limit: int) -> _Asked:
    params = request.query_params
    shown = {key: params.get(key, "").strip() for key in ("user", "vm", "pool", "action", "since", "until")}
    error = ""
    times: dict[str, datetime | None] = {}
    for key in ("since", "until"):
        try:
            times[key] = _utc(datetime.fromisoformat(shown[key])) if shown[key] else None
        except (ValueError, OverflowError):
            times[key], shown[key] = None, ""
            error = _("A time is written YYYY-MM-DD HH:MM (UTC).")
    pool_name, pool_id = None, None
    if _ID.fullmatch(shown["pool"]):
        pool = await pool_store.get_pool(services_of(request).db, int(shown["pool"]))
        if pool is not None:
            pool_name, pool_id = pool.name, pool.id
    if shown["pool"] and pool_name is None:
        shown["pool"], error = "", _("That pool does not exist (any more).")
    before = params.get("before", "")
    wanted = AuditFilter(
        actor=shown["user"][:128] or None,
        action=shown["action"][:64] or None,
        target=shown["vm"][:255] or None,
        pool_name=pool_name,
        pool_id=pool_id,
        since=times["since"],
        until=times["until"],
        before=int(before) if _ID.fullmatch(before) else None,
        limit=limit,
    )
    return _Asked(wanted, shown, error)


def _query(shown: dict[str, str], **more: str | int) -> str:
    kept = {key: value for key, value in {**shown, **more}.items() if value not in ("", None)}
    return urlencode(kept)


def console_summary(details: dict[str, Any]) -> dict[str, Any] | None:
    """A console session's duration and bytes, for the table (None for other records)."""
    if "seconds" not in details or "bytes_to_client" not in details:
        return None
    return {
        "seconds": int(float(details.get("seconds") or 0)),
        "to_client": int(details.get("bytes_to_client") or 0),
        "to_vm": int(details.get("bytes_to_vm") or 0),
        "via": str(details.get("via", "")),
    }


@admin_required
@describe(
    "The Audit page: records filtered and paged, newest first",
    query=AuditPageQuery,
    responses={200: HTML_PAGE, 400: HTML_PAGE},
)
async def page(request: Request) -> Response:
    services = services_of(request)
    asked = await _asked(request, PAGE)
    found = await audit_page(services.db, asked.wanted)
    # The action index answers this without reading the rows.
    actions = [
        found.name
        for found in await fetch_records(
            services.db, Named, sa.select(audit_log.c.action.label("name")).distinct().order_by("name")
        )
    ]
    filtered = any(asked.shown.values())
    return render(
        request,
        "audit/index.html",
        {
            "title": _("Audit log"),
            "active": "audit",
            "records": [(record, console_summary(record.details)) for record in found.records],
            "shown": asked.shown,
            "error": asked.error,
            "filtered": filtered,
            "paged": asked.wanted.before is not None,
            "actions": actions,
            "pools": await pool_store.list_pools(services.db),
            "older_url": (
                f"/audit?{_query(asked.shown, before=found.next_before)}" if found.next_before else ""
            ),
            "newest_url": f"/audit?{_query(asked.shown)}",
            "csv_url": f"/audit.csv?{_query(asked.shown)}",
        },
        status_code=400 if asked.error else 200,
    )


def _cell(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA) else text


def _csv_line(record: AuditRecord) -> str:
    out = io.StringIO()
    details = " ".join(f"{key}={value}" for key, value in sorted(record.details.items()))
    csv.writer(out, lineterminator="\r\n").writerow(
        [
            record.id,
            record.at.isoformat(),
            _cell(record.actor),
            record.action,
            _cell(record.target),
            record.client_address,
            _cell(details),
        ]
    )
    return out.getvalue()


@admin_required
@describe("Every audit record the filters name, as CSV", query=AuditPageQuery, responses={200: CSV})
async def csv_export(request: Request) -> Response:
    """Every record the filters name, newest first (up to :data:`CSV_LIMIT`), read page by page."""
    asked = await _asked(request, 1000)
    db = services_of(request).db

    async def lines() -> AsyncIterator[str]:
        yield ",".join(CSV_COLUMNS) + "\r\n"
        wanted, written = replace(asked.wanted, before=None), 0
        while written < CSV_LIMIT:
            found = await audit_page(db, wanted)
            for record in found.records:
                yield _csv_line(record)
            written += len(found.records)
            if found.next_before is None:
                return
            wanted = replace(wanted, before=found.next_before)

    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="audit.csv"'},
    )


routes = [
    Route("/audit", page, methods=["GET"], name="audit"),
    Route("/audit.csv", csv_export, methods=["GET"]),
]
