"""Pool schedules on a dashboard whose clock the tests move: the admin API and its checks, the
pool page (next run in the dashboard's time zone, last run and result), each start run once
however many runners look, a start the dashboard missed, and the audit of it all. The desktops
are rows of a rows-only hypervisor (nothing starts there: the outcome says so); the real
starts and stops are in test_schedules_kvm.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from app.broker.schedule_runner import ScheduleRunner
from app.db.records import ScheduleRecord
from app.db.schema import audit_log, pool_schedules
from tests.dashboard import BrowserLikeClient, DashboardFactory, RunningDashboard
from tests.rows import the_record
from tests.vms.fleet import Fleet, build_fleet

VILNIUS = ZoneInfo("Europe/Vilnius")


@dataclass
class SchedulePool:
    dashboard: RunningDashboard
    fleet: Fleet
    admin: BrowserLikeClient

    @property
    def pool_id(self) -> int:
        return self.fleet.pool_ids[0]

    @property
    def runner(self) -> ScheduleRunner:
        return self.dashboard.services.schedules

    def jump_to(self, moment: datetime) -> None:
        """Move the dashboard's clock to ``moment`` (naive UTC, in the future)."""
        self.dashboard.clock.advance((moment - self.dashboard.clock.now()).total_seconds())

    async def add(self, **schedule: object) -> dict[str, object]:
        answer = await self.admin.post(f"/api/v1/admin/pools/{self.pool_id}/schedules", json=schedule)
        assert answer.status_code == 201, answer.text
        created: dict[str, object] = answer.json()["schedule"]
        return created

    async def row(self, schedule_id: object) -> ScheduleRecord:
        return await the_record(
            self.dashboard.services.db,
            ScheduleRecord,
            pool_schedules.select().where(pool_schedules.c.id == schedule_id),
        )


@pytest.fixture
async def schedule_pool(dashboard_factory: DashboardFactory) -> AsyncIterator[SchedulePool]:
    dashboard = await dashboard_factory(time_zone="Europe/Vilnius")
    # The runner's own loop is stopped: the tests move the clock and call tick() themselves.
    await dashboard.services.schedules.stop()
    fleet = await build_fleet(dashboard.services.db, 24, hosts=1, simple=0, holders=4, prefix="sc")
    yield SchedulePool(dashboard, fleet, await dashboard.admin())


async def test_schedules_are_checked_listed_and_shown_with_their_next_run(
    schedule_pool: SchedulePool,
) -> None:
    admin = schedule_pool.admin
    path = f"/api/v1/admin/pools/{schedule_pool.pool_id}/schedules"
    refused = await admin.post(path, json={"kind": "keep_ready", "days": ["mon"], "at": "25:00", "count": 0})
    assert refused.status_code == 400
    assert set(refused.json()["fields"]) == {"at", "until", "count"}
    unknown_day = await admin.post(path, json={"kind": "power_off", "days": ["someday"], "at": "20:00"})
    assert unknown_day.status_code == 400 and "days" in unknown_day.json()["fields"]

    window = await schedule_pool.add(
        kind="keep_ready", days=["mon", "tue", "wed", "thu", "fri"], at="07:30", until="17:00", count=12
    )
    assert window["description"] == "Weekdays 07:30\u201317:00: keep 12 started"
    # The next run is 07:30 in Vilnius, said in its zone.
    next_run = datetime.fromisoformat(str(window["next_run"]))
    assert next_run.utcoffset() == VILNIUS.utcoffset(next_run.replace(tzinfo=None))
    assert (next_run.hour, next_run.minute) == (7, 30) and next_run.weekday() < 5
    listed = (await admin.get(path)).json()
    assert listed["time_zone"] == "Europe/Vilnius" and [s["id"] for s in listed["schedules"]] == [
        window["id"]
    ]

    page = await admin.get(f"/pools/{schedule_pool.pool_id}")
    assert "Weekdays 07:30\u201317:00: keep 12 started" in page.text
    # A Lithuanian admin reads the description in Lithuanian, in the API and on the page.
    lithuanian = {"Accept-Language": "lt"}
    described = (await admin.get(path, headers=lithuanian)).json()["schedules"][0]["description"]
    assert described == "Darbo dienomis 07:30\u201317:00: laikyti paleistų 12 darbalaukių"
    assert described in (await admin.get(f"/pools/{schedule_pool.pool_id}", headers=lithuanian)).text
    assert next_run.strftime("%a %Y-%m-%d %H:%M") in page.text and "Europe/Vilnius" in page.text

    # The page's form: a wrong time is refused naming the field, the filled-in values kept.
    form = await admin.post(
        f"/pools/{schedule_pool.pool_id}/schedules",
        {"kind": "power_off", "days": "sat", "at": "7h"},
    )
    assert form.status_code == 400 and "a time of day as HH:MM" in form.text and 'value="7h"' in form.text
    added = await admin.post(
        f"/pools/{schedule_pool.pool_id}/schedules", {"kind": "power_off", "days": "sat", "at": "20:15"}
    )
    assert added.status_code == 303
    kinds = [s["kind"] for s in (await admin.get(path)).json()["schedules"]]
    assert kinds == ["keep_ready", "power_off"]

    switched = await admin.patch(f"{path}/{window['id']}", json={"enabled": False})
    assert switched.json()["schedule"]["next_run"] is None
    assert admin.csrf is not None
    assert (
        await admin.http.delete(f"{path}/{window['id']}", headers={"X-CSRF-Token": admin.csrf})
    ).status_code == 200
    audited = await schedule_pool.dashboard.services.db.fetch_all(
        sa.select(audit_log.c.action)
        .where(audit_log.c.action.like("pool_schedule_%"))
        .order_by(audit_log.c.id)
    )
    assert [row["action"] for row in audited] == [
        "pool_schedule_created",
        "pool_schedule_created",
        "pool_schedule_changed",
        "pool_schedule_deleted",
    ]


async def test_each_start_runs_once_whatever_the_number_of_runners(schedule_pool: SchedulePool) -> None:
    """Three runners (as three dashboards would) look at the same moment: one runs the start."""
    schedule = await schedule_pool.add(
        kind="power_off", days=["mon", "tue", "wed", "thu", "fri", "sat", "sun"], at="20:00"
    )
    runner = schedule_pool.runner
    start = await runner.store.get(int(str(schedule["id"])))
    assert start is not None
    due = start.when.next(schedule_pool.dashboard.clock.now(), VILNIUS)
    schedule_pool.jump_to(due + timedelta(seconds=30))
    others = [
        ScheduleRunner(
            db=runner.db,
            clock=runner.clock,
            time_zone=runner.time_zone,
            audit=runner.audit,
            registry=runner.registry,
            power=runner.power,
            vms=runner.vms,
        )
        for _ in range(2)
    ]
    ran = await asyncio.gather(runner.tick(), *(other.tick() for other in others))
    assert sum(len(each) for each in ran) == 1
    row = await schedule_pool.row(schedule["id"])
    # The held desktops are left alone; the free ones cannot be reached on a rows-only
    # hypervisor, and the result names them.
    assert row.last_run_at == due and row.last_status == "failed"
    assert row.last_result is not None
    assert "held by users left alone" in row.last_result and "sc1-desk0001" in row.last_result
    runs = await schedule_pool.dashboard.services.db.fetch_all(
        audit_log.select().where(audit_log.c.action == "pool_schedule_run")
    )
    assert len(runs) == 1 and runs[0]["actor"] == "schedule" and runs[0]["target"] == "sc pool 1"
    assert json.loads(runs[0]["details_json"])["kind"] == "power_off"
    # Looking again changes nothing until the next start.
    assert await runner.tick() == []

    # The API and the page show the last run and its result (to an admin signed in again: the
    # clock jumped past the first session's idle limit).
    schedule_pool.admin = await schedule_pool.dashboard.admin()
    listed = (await schedule_pool.admin.get(f"/api/v1/admin/pools/{schedule_pool.pool_id}/schedules")).json()
    last = listed["schedules"][0]["last_run"]
    assert last["status"] == "failed" and datetime.fromisoformat(last["at"]).hour == 20
    page = (await schedule_pool.admin.get(f"/pools/{schedule_pool.pool_id}")).text
    assert "held by users left alone" in page


async def test_a_start_the_dashboard_missed_is_recorded_not_run_late(schedule_pool: SchedulePool) -> None:
    schedule = await schedule_pool.add(
        kind="reset", days=["mon", "tue", "wed", "thu", "fri", "sat", "sun"], at="02:00"
    )
    stored = await schedule_pool.runner.store.get(int(str(schedule["id"])))
    assert stored is not None
    due = stored.when.next(schedule_pool.dashboard.clock.now(), VILNIUS)
    schedule_pool.jump_to(due + timedelta(hours=3))
    assert await schedule_pool.runner.tick() == [(stored.id, "missed")]
    row = await schedule_pool.row(stored.id)
    assert row.last_status == "missed" and "not running at" in (row.last_result or "")


async def test_a_keep_ready_window_says_what_it_could_not_start(schedule_pool: SchedulePool) -> None:
    """The rows-only hypervisor takes no new work: the window's outcome names the desktops."""
    schedule = await schedule_pool.add(
        kind="keep_ready",
        days=["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        at="06:00",
        until="18:00",
        count=30,
    )
    stored = await schedule_pool.runner.store.get(int(str(schedule["id"])))
    assert stored is not None
    due = stored.when.next(schedule_pool.dashboard.clock.now(), VILNIUS)
    schedule_pool.jump_to(due + timedelta(minutes=1))
    await schedule_pool.runner.tick()
    row = await schedule_pool.row(stored.id)
    assert row.last_run_at == due and row.last_status == "failed"
    assert row.last_result is not None
    assert "its hypervisor takes no new work" in row.last_result and "short" in row.last_result
