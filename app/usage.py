"""The usage report: per pool and per day, how much the desktops were used.

For each pool and each day (in the dashboard's time zone) between two dates:

* ``peak_desktops``: the most desktops held at the same moment (leases overlapping);
* ``desktops_handed_out``: leases that started that day;
* ``hours_used``: the hours desktops were held (the part of each lease within the day);
* ``console_sessions`` and ``console_hours``: console sessions that started that day, and how long
  they lasted, from their ``console.session`` audit records; a session counts for the pool its VM
  belongs to now;
* ``refusals``: requests refused because the pool had no free desktop (``desktop_refused`` audit
  records with ``refusal = no_free_desktop``).

Leases are kept for ever; console sessions and refusals are audit records and go with them when the
retention purge removes them (``[audit] retention_days``). The rows are read from the database and
added up on a worker thread: a year of a large fleet is many rows and the event loop must not wait.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from databases import Database

from app.db.records import Record, fetch_records
from app.db.schema import audit_log, leases, pool_vms, pools
from app.i18n import gettext as _

# A longer report is refused: it says nothing a monthly one would not, and costs a lot to add up.
MAX_DAYS = 366
CONSOLE_SESSION = "console.session"
DESKTOP_REFUSED = "desktop_refused"
NO_FREE_DESKTOP = "no_free_desktop"

COLUMNS = (
    "day",
    "pool",
    "peak_desktops",
    "desktops_handed_out",
    "hours_used",
    "console_sessions",
    "console_hours",
    "refusals",
)


class UsageRangeError(ValueError):
    """The asked-for days cannot be reported (reversed, or longer than :data:`MAX_DAYS`)."""


@dataclass(frozen=True)
class UsageDay:
    day: date
    pool_id: int
    pool: str
    peak_desktops: int = 0
    desktops_handed_out: int = 0
    hours_used: float = 0.0
    console_sessions: int = 0
    console_hours: float = 0.0
    refusals: int = 0

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "day": self.day.isoformat()}


@dataclass(frozen=True)
class UsageReport:
    first: date
    last: date
    time_zone: str
    # Day by day, pool by pool (by name), every day of every pool (zeros included: a chart needs them).
    days: list[UsageDay]

    def as_json(self) -> dict[str, Any]:
        return {
            "first": self.first.isoformat(),
            "last": self.last.isoformat(),
            "time_zone": self.time_zone,
            "columns": list(COLUMNS),
            "days": [day.as_json() for day in self.days],
        }

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(COLUMNS)
        for day in self.days:
            writer.writerow(
                [
                    day.day.isoformat(),
                    # A pool name starting with = + - @ is not run as a formula by a spreadsheet.
                    _cell(day.pool),
                    day.peak_desktops,
                    day.desktops_handed_out,
                    f"{day.hours_used:.2f}",
                    day.console_sessions,
                    f"{day.console_hours:.2f}",
                    day.refusals,
                ]
            )
        return out.getvalue()


def _cell(text: str) -> str:
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@dataclass(frozen=True)
class _Pool(Record):
    id: int
    name: str


@dataclass(frozen=True)
class _Lease(Record):
    pool_id: int
    started_at: datetime
    ended_at: datetime | None


@dataclass(frozen=True)
class _Audited(Record):
    at: datetime
    action: str
    details_json: str


@dataclass(frozen=True)
class _Member(Record):
    vm_id: int
    pool_id: int


@dataclass
class _Tally:
    intervals: list[tuple[datetime, datetime]] = field(default_factory=list)
    handed_out: int = 0
    console_sessions: int = 0
    console_seconds: float = 0.0
    refusals: int = 0


class _Days:
    """The report's local days and their bounds in naive UTC (as stored)."""

    def __init__(self, first: date, last: date, tz: ZoneInfo) -> None:
        self.first, self.tz = first, tz
        count = (last - first).days + 1
        # One bound more than days: day i is [bounds[i], bounds[i + 1]); DST days are 23 or 25 hours.
        self.bounds = [self._utc(first + timedelta(days=i)) for i in range(count + 1)]

    def _utc(self, day: date) -> datetime:
        return datetime.combine(day, time(), self.tz).astimezone(UTC).replace(tzinfo=None)

    @property
    def start(self) -> datetime:
        return self.bounds[0]

    @property
    def end(self) -> datetime:
        return self.bounds[-1]

    def index(self, moment: datetime) -> int | None:
        """The day ``moment`` (naive UTC) falls on, or None outside the report."""
        if not self.start <= moment < self.end:
            return None
        local = moment.replace(tzinfo=UTC).astimezone(self.tz).date()
        return (local - self.first).days


# Days a report may name: far enough either way for any real use, and away from the calendar's ends.
EARLIEST, LATEST = date(1970, 1, 1), date(9000, 12, 31)


def parse_day(text: str | None, default: date) -> date:
    if not text:
        return default
    try:
        day = date.fromisoformat(text)
    except ValueError as exc:
        raise UsageRangeError(_("{text} is not a date (YYYY-MM-DD).").format(text=text[:40])) from exc
    if not EARLIEST <= day <= LATEST:
        raise UsageRangeError(_("{text} is not a date (YYYY-MM-DD).").format(text=text[:40]))
    return day


def check_range(first: date, last: date) -> None:
    if last < first:
        raise UsageRangeError(_("The last day is before the first."))
    if (last - first).days + 1 > MAX_DAYS:
        raise UsageRangeError(_("At most {days} days in one report.").format(days=MAX_DAYS))


async def usage_report(
    db: Database,
    *,
    first: date,
    last: date,
    tz: ZoneInfo,
    now: datetime,
    pool_id: int | None = None,
) -> UsageReport:
    """The report of the days ``first`` to ``last`` (both included, local to ``tz``); ``now`` is naive
    UTC: leases still held count up to it, and days after it are empty."""
    check_range(first, last)
    days = _Days(first, last, tz)
    pool_query = sa.select(pools.c.id, pools.c.name).order_by(pools.c.name)
    lease_query = sa.select(leases.c.pool_id, leases.c.started_at, leases.c.ended_at).where(
        leases.c.pool_id.is_not(None),
        leases.c.started_at < days.end,
        sa.or_(leases.c.ended_at.is_(None), leases.c.ended_at > days.start),
    )
    member_query = sa.select(pool_vms.c.vm_id, pool_vms.c.pool_id)
    if pool_id is not None:
        pool_query = pool_query.where(pools.c.id == pool_id)
        lease_query = lease_query.where(leases.c.pool_id == pool_id)
        member_query = member_query.where(pool_vms.c.pool_id == pool_id)
    # A console session's record is written when it ends: one that started on the report's first
    # day may end a day later, so a day more is read (and sessions started earlier are left out).
    audit_query = sa.select(audit_log.c.at, audit_log.c.action, audit_log.c.details_json).where(
        audit_log.c.action.in_((CONSOLE_SESSION, DESKTOP_REFUSED)),
        audit_log.c.at >= days.start,
        audit_log.c.at < days.end + timedelta(days=1),
    )
    found_pools = await fetch_records(db, _Pool, pool_query)
    held = await fetch_records(db, _Lease, lease_query)
    members = await fetch_records(db, _Member, member_query)
    audited = await fetch_records(db, _Audited, audit_query)
    rows = await asyncio.to_thread(_add_up, days, now, found_pools, held, members, audited)
    return UsageReport(first, last, tz.key, rows)


def _add_up(
    days: _Days,
    now: datetime,
    found_pools: Sequence[_Pool],
    held: Iterable[_Lease],
    members: Iterable[_Member],
    audited: Iterable[_Audited],
) -> list[UsageDay]:
    names = {pool.id: pool.name for pool in found_pools}
    tallies: dict[tuple[int, int], _Tally] = defaultdict(_Tally)
    for lease in held:
        if lease.pool_id not in names:
            continue
        end = min(lease.ended_at or now, now)
        start_day = days.index(lease.started_at)
        if start_day is not None:
            tallies[(lease.pool_id, start_day)].handed_out += 1
        # The lease's part within each day it spans.
        for index in range(days.index(max(lease.started_at, days.start)) or 0, len(days.bounds) - 1):
            low, high = max(lease.started_at, days.bounds[index]), min(end, days.bounds[index + 1])
            if low < high:
                tallies[(lease.pool_id, index)].intervals.append((low, high))
            elif days.bounds[index] >= end:
                break
    pool_of_vm = {member.vm_id: member.pool_id for member in members}
    for record in audited:
        details = _details(record.details_json)
        if record.action == CONSOLE_SESSION:
            owner = pool_of_vm.get(_int(details.get("vm_id")), -1)
            moment = _moment(details.get("started_at")) or record.at
        elif details.get("refusal") == NO_FREE_DESKTOP:
            owner, moment = _int(details.get("pool_id")), record.at
        else:
            continue
        day_index = days.index(moment)
        if owner not in names or day_index is None:
            continue
        tally = tallies[(owner, day_index)]
        if record.action == CONSOLE_SESSION:
            tally.console_sessions += 1
            tally.console_seconds += _float(details.get("seconds"))
        else:
            tally.refusals += 1
    report = []
    for index in range(len(days.bounds) - 1):
        day = days.first + timedelta(days=index)
        for pool in found_pools:
            tally = tallies.get((pool.id, index), _Tally())
            report.append(
                UsageDay(
                    day=day,
                    pool_id=pool.id,
                    pool=pool.name,
                    peak_desktops=_peak(tally.intervals),
                    desktops_handed_out=tally.handed_out,
                    hours_used=round(sum((b - a).total_seconds() for a, b in tally.intervals) / 3600, 2),
                    console_sessions=tally.console_sessions,
                    console_hours=round(tally.console_seconds / 3600, 2),
                    refusals=tally.refusals,
                )
            )
    return report


def _peak(intervals: Sequence[tuple[datetime, datetime]]) -> int:
    """The most intervals open at one moment (one that ends as another starts: not both)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    peak = current = 0
    for _moment, step in events:
        current += step
        peak = max(peak, current)
    return peak


def _details(text: str) -> dict[str, Any]:
    try:
        found = json.loads(text)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _int(value: Any) -> int:
    """An id from a record's details; -1 (no row's id) when it is not a number."""
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def _float(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=None)
    except ValueError:
        return None
