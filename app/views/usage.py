"""The usage report: a page with a chart and a table, its CSV and its JSON (the same figures)."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.api.describe import CSV, PAGE, describe
from app.api.forms import UsageQuery
from app.api.image_models import UsageOut
from app.api.out import answer
from app.broker import pools as pool_store
from app.i18n import gettext as _
from app.services import services_of
from app.usage import EARLIEST, MAX_DAYS, UsageRangeError, UsageReport, check_range, parse_day, usage_report
from app.views.forms import json_error, render
from app.views.guards import admin_api, admin_required

# A row id as a query gives it: ASCII digits, small enough for a BIGINT.
_ID = re.compile(r"[0-9]{1,18}")
# Without dates: the last 30 days, today included.
DEFAULT_DAYS = 30


class _Asked:
    """The report a request asks for: ``from``, ``to`` (YYYY-MM-DD, local) and ``pool`` (an id)."""

    def __init__(self, request: Request) -> None:
        services = services_of(request)
        self.tz = ZoneInfo(services.settings.time_zone)
        self.now = services.clock.now()
        local_today = _local_date(self.now, self.tz)
        params = request.query_params
        self.last = parse_day(params.get("to"), local_today)
        self.first = parse_day(
            params.get("from"), max(EARLIEST, self.last - timedelta(days=DEFAULT_DAYS - 1))
        )
        check_range(self.first, self.last)
        pool = params.get("pool", "")
        if pool and not _ID.fullmatch(pool):
            raise UsageRangeError(_("The pool is named by its number."))
        self.pool_id = int(pool) if pool else None

    async def report(self, request: Request) -> UsageReport:
        return await usage_report(
            services_of(request).db,
            first=self.first,
            last=self.last,
            tz=self.tz,
            now=self.now,
            pool_id=self.pool_id,
        )


def _local_date(now: datetime, tz: ZoneInfo) -> date:
    return now.replace(tzinfo=ZoneInfo("UTC")).astimezone(tz).date()


def _refused(error: UsageRangeError) -> JSONResponse:
    return json_error("invalid", str(error), 400)


@admin_api
@describe(
    "Usage per pool and day: most desktops at once, sessions, hours used, refusals",
    query=UsageQuery,
    responses={200: UsageOut},
)
async def api(request: Request) -> Response:
    """``GET /api/v1/admin/usage?from=&to=&pool=``: per pool and day, as the page shows it."""
    try:
        asked = _Asked(request)
    except UsageRangeError as error:
        return _refused(error)
    return answer(UsageOut.model_validate((await asked.report(request)).as_json()))


@admin_required
@describe("Usage per pool and day as CSV", query=UsageQuery, responses={200: CSV})
async def csv_export(request: Request) -> Response:
    try:
        asked = _Asked(request)
    except UsageRangeError as error:
        return _refused(error)
    report = await asked.report(request)
    name = f"usage-{report.first.isoformat()}-{report.last.isoformat()}.csv"
    return Response(
        report.csv(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@admin_required
@describe("The usage report, with its chart", query=UsageQuery, responses={200: PAGE, 400: PAGE})
async def page(request: Request) -> Response:
    error = ""
    try:
        asked = _Asked(request)
    except UsageRangeError as refused:
        error = str(refused)
        request = _without_query(request)
        asked = _Asked(request)
    report = await asked.report(request)
    totals = {
        "hours_used": round(sum(day.hours_used for day in report.days), 1),
        "console_sessions": sum(day.console_sessions for day in report.days),
        "refusals": sum(day.refusals for day in report.days),
        "peak_desktops": max((day.peak_desktops for day in report.days), default=0),
    }
    query = request.url.query
    return render(
        request,
        "usage/index.html",
        {
            "title": _("Usage"),
            "active": "usage",
            "report": report,
            "chart": report.as_json(),
            "totals": totals,
            "pools": await pool_store.list_pools(services_of(request).db),
            "pool_id": asked.pool_id,
            "error": error,
            "csv_url": "/usage.csv" + (f"?{query}" if query else ""),
            "max_days": MAX_DAYS,
        },
        status_code=400 if error else 200,
    )


def _without_query(request: Request) -> Request:
    scope = dict(request.scope)
    scope["query_string"] = b""
    return Request(scope, request.receive)


routes = [
    Route("/usage", page, methods=["GET"], name="usage"),
    Route("/usage.csv", csv_export, methods=["GET"]),
    Route("/api/v1/admin/usage", api, methods=["GET"]),
]
