"""Pool schedules: what an admin asked for, checked, stored, and when each runs next.

Kinds:

* ``keep_ready``: a window ("weekdays 07:30-17:00, keep 40 started"): while it is open the
  pool's free desktops are started until ``count`` of them run;
* ``power_off``: shut down (ACPI, the guest agent where one answers) every desktop of the
  pool that runs and nobody holds;
* ``reset``: a fresh boot for every running desktop nobody holds (volatile ones on a new overlay);
* ``populate``: recreate the disks of the pool's VDI machines from their initial machine,
  for each initial machine none of whose desktops is held.

The runner (:mod:`app.broker.schedule_runner`) claims each start exactly once in the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from databases import Database

from app.broker.schedule_times import (
    DAY_NAMES,
    ScheduleTimeError,
    When,
    days_text,
    local,
    parse_days,
    parse_time,
)
from app.db.records import ScheduleRecord, fetch_record, fetch_records
from app.db.schema import pool_schedules
from app.i18n import N_, gettext, ngettext, use_language
from app.i18n import gettext as _
from app.i18n.catalogues import SOURCE_LANGUAGE
from app.i18n.formatting import format_number

Kind = Literal["keep_ready", "power_off", "reset", "populate"]
KINDS: dict[str, str] = {
    "keep_ready": N_("Keep desktops started"),
    "power_off": N_("Power off free desktops"),
    "reset": N_("Reset free desktops"),
    "populate": N_("Populate (recreate the desktops' disks)"),
}
MAX_COUNT = 10_000
# Schedules per pool: a handful is what a week needs; the bound keeps a pool page short.
MAX_PER_POOL = 20


class ScheduleError(ValueError):
    """A schedule that cannot be saved: ``errors`` by field."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{key}: {value}" for key, value in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class ScheduleSpec:
    """A schedule as the admin asked for it, checked."""

    kind: Kind
    when: When
    count: int = 0
    enabled: bool = True

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> ScheduleSpec:
        """From a form or JSON body: kind, days (names), at, until, count, enabled."""
        errors: dict[str, str] = {}
        kind = str(data.get("kind", ""))
        if kind not in KINDS:
            errors["kind"] = _("choose what the schedule does")
        raw_days = data.get("days", [])
        days: frozenset[int] = frozenset()
        try:
            days = parse_days([str(day) for day in raw_days] if isinstance(raw_days, list | tuple) else [])
        except ScheduleTimeError as exc:
            errors[exc.field] = exc.message
        at = until = None
        try:
            at = parse_time(str(data.get("at", "")), "at")
        except ScheduleTimeError as exc:
            errors[exc.field] = exc.message
        count = 0
        if kind == "keep_ready":
            try:
                until = parse_time(str(data.get("until", "")), "until")
            except ScheduleTimeError as exc:
                errors[exc.field] = exc.message + " " + _("(when the window closes)")
            if at is not None and until == at:
                errors["until"] = _("the window must end at another time than it starts")
            text = str(data.get("count", ""))
            if not text.isdigit() or not 1 <= int(text) <= MAX_COUNT:
                errors["count"] = _("how many desktops to keep started: 1 to {most}").format(most=MAX_COUNT)
            else:
                count = int(text)
        if errors or at is None:
            raise ScheduleError(errors)
        enabled = data.get("enabled", True)
        return cls(
            kind=kind,  # type: ignore[arg-type]
            when=When(days=days, at=at, until=until),
            count=count,
            enabled=enabled is True or str(enabled).lower() in ("1", "true", "on"),
        )


@dataclass(frozen=True)
class Schedule:
    id: int
    pool_id: int
    spec: ScheduleSpec
    created_by: str
    created_at: datetime
    last_run_at: datetime | None = None
    last_finished_at: datetime | None = None
    last_status: str | None = None
    last_result: str | None = None

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def when(self) -> When:
        return self.spec.when

    def describe(self) -> str:
        """ "Weekdays 07:30-17:00: keep 40 started", in the current language (worked out each time
        it is shown; the audit log records it in English, see :meth:`describe_english`)."""
        when = self.when
        times = when.at.strftime("%H:%M")
        if when.until is not None:
            times += "\u2013" + when.until.strftime("%H:%M")
        days = days_text(when.days)
        days = days[:1].upper() + days[1:]
        if self.kind == "keep_ready":
            count = self.spec.count
            return ngettext(
                "{days} {times}: keep {count} started", "{days} {times}: keep {count} started", count
            ).format(days=days, times=times, count=format_number(count))
        action = gettext(KINDS[self.kind])
        return _("{days} {times}: {action}").format(
            days=days, times=times, action=action[:1].lower() + action[1:]
        )

    def describe_english(self) -> str:
        """:meth:`describe` for the audit log, which is kept in one language."""
        with use_language(SOURCE_LANGUAGE):
            return self.describe()

    def next_run(self, now: datetime, tz: ZoneInfo) -> datetime | None:
        return self.when.next(now, tz) if self.spec.enabled else None

    def summary(self, now: datetime, tz: ZoneInfo) -> dict[str, Any]:
        def stamp(moment: datetime | None) -> str | None:
            return local(moment, tz).isoformat() if moment is not None else None

        when = self.when
        return {
            "id": self.id,
            "pool_id": self.pool_id,
            "kind": self.kind,
            "days": [DAY_NAMES[day] for day in sorted(when.days)],
            "at": when.at.strftime("%H:%M"),
            "until": when.until.strftime("%H:%M") if when.until is not None else None,
            "count": self.spec.count,
            "enabled": self.spec.enabled,
            "description": self.describe(),
            "time_zone": tz.key,
            "next_run": stamp(self.next_run(now, tz)),
            "window_open": when.open_window(now, tz) is not None if self.spec.enabled else False,
            "last_run": {
                "at": stamp(self.last_run_at),
                "finished_at": stamp(self.last_finished_at),
                "status": self.last_status,
                "result": self.last_result,
            }
            if self.last_run_at is not None
            else None,
        }


def _from_row(row: ScheduleRecord) -> Schedule:
    days = frozenset(int(day) for day in row.days.split(",") if day.isdigit())
    until = parse_time(row.until, "until") if row.until else None
    return Schedule(
        id=int(row.id),
        pool_id=int(row.pool_id),
        spec=ScheduleSpec(
            kind=row.kind,  # type: ignore[arg-type]
            when=When(days=days, at=parse_time(row.at, "at"), until=until),
            count=row.count,
            enabled=row.enabled,
        ),
        created_by=str(row.created_by),
        created_at=row.created_at,
        last_run_at=row.last_run_at,
        last_finished_at=row.last_finished_at,
        last_status=row.last_status,
        last_result=row.last_result,
    )


class ScheduleStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def list(self, pool_id: int | None = None, *, enabled_only: bool = False) -> list[Schedule]:
        query = pool_schedules.select().order_by(pool_schedules.c.pool_id, pool_schedules.c.id)
        if pool_id is not None:
            query = query.where(pool_schedules.c.pool_id == pool_id)
        if enabled_only:
            query = query.where(pool_schedules.c.enabled.is_(sa.true()))
        return [_from_row(row) for row in await fetch_records(self.db, ScheduleRecord, query)]

    async def get(self, schedule_id: int) -> Schedule | None:
        row = await fetch_record(
            self.db, ScheduleRecord, pool_schedules.select().where(pool_schedules.c.id == schedule_id)
        )
        return _from_row(row) if row is not None else None

    async def create(self, pool_id: int, spec: ScheduleSpec, *, actor: str, now: datetime) -> int:
        existing = await self.db.fetch_val(
            sa.select(sa.func.count()).select_from(pool_schedules).where(pool_schedules.c.pool_id == pool_id)
        )
        if int(existing or 0) >= MAX_PER_POOL:
            raise ScheduleError({"kind": _("a pool has at most {most} schedules").format(most=MAX_PER_POOL)})
        when = spec.when
        return int(
            await self.db.execute(
                pool_schedules.insert().values(
                    pool_id=pool_id,
                    kind=spec.kind,
                    days=",".join(str(day) for day in sorted(when.days)),
                    at=when.at.strftime("%H:%M"),
                    until=when.until.strftime("%H:%M") if when.until is not None else None,
                    count=spec.count,
                    enabled=spec.enabled,
                    created_by=actor[:64],
                    created_at=now,
                )
            )
        )

    async def set_enabled(self, schedule_id: int, enabled: bool) -> None:
        await self.db.execute(
            pool_schedules.update().where(pool_schedules.c.id == schedule_id).values(enabled=enabled)
        )

    async def delete(self, schedule_id: int) -> None:
        await self.db.execute(pool_schedules.delete().where(pool_schedules.c.id == schedule_id))

    async def finish(self, schedule_id: int, *, status: str, result: str, now: datetime) -> None:
        await self.db.execute(
            pool_schedules.update()
            .where(pool_schedules.c.id == schedule_id)
            .values(last_status=status, last_result=result[:2000], last_finished_at=now)
        )


def spec_from_form(form: Iterable[tuple[str, Any]]) -> ScheduleSpec:
    """A form's fields (``days`` repeated) as a :class:`ScheduleSpec`."""
    data: dict[str, Any] = {"days": []}
    for key, value in form:
        if key == "days":
            data["days"].append(str(value))
        else:
            data[key] = value
    data.setdefault("enabled", "on")
    return ScheduleSpec.parse(data)
