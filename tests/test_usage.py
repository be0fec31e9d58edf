"""The usage report from real rows (leases, console sessions, refusals): per pool and per day in the
dashboard's time zone, as JSON, CSV and a page; a refused request is recorded by the broker itself."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import datetime, timedelta

import pytest
from databases import Database

from app.db.schema import audit_log, leases, vms
from tests.broker.records import add_client, add_connected_hypervisor, add_hypervisor, add_pool, add_vm
from tests.browser_steps import By, log_in, severe_console_errors, wait
from tests.dashboard import DashboardFactory, RunningDashboard
from tests.services.browser import BrowserFactory

# Vilnius is UTC+2 in winter: a local day runs from 22:00 UTC the day before.
ZONE = "Europe/Vilnius"


async def _lease(
    db: Database, user: int, vm: int, pool: int, started: datetime, ended: datetime | None
) -> None:
    await db.execute(
        leases.insert().values(
            user_id=user,
            vm_id=vm,
            pool_id=pool,
            started_at=started,
            last_heartbeat_at=started,
            expires_at=(ended or started) + timedelta(minutes=5),
            ended_at=ended,
            end_reason="returned" if ended else "",
        )
    )


async def _audit(db: Database, at: datetime, action: str, **details: object) -> None:
    await db.execute(
        audit_log.insert().values(
            at=at, actor="u", action=action, target="t", details_json=json.dumps(details)
        )
    )


@pytest.fixture
async def used(dashboard_factory: DashboardFactory) -> RunningDashboard:
    """Two pools and a day of use: 2026-11-10 (Vilnius) and the evening before."""
    dashboard = await dashboard_factory(time_zone=ZONE)
    db = dashboard.services.db
    hv = await add_hypervisor(db, "usage-hv", state="down")
    desks = [await add_vm(db, f"lab-{i}", hv) for i in range(3)]
    office = await add_vm(db, "office-1", hv)
    alice, bob, carol = [await add_client(db, name) for name in ("alice", "bob", "carol")]
    lab = await add_pool(db, "lab", desks, [alice, bob, carol])
    await add_pool(db, "office", [office], [alice])
    utc = datetime
    # 2026-11-09 23:30 local (21:30 UTC) to 2026-11-10 01:30 local: 30 min on the 9th, 1.5 h on the 10th.
    await _lease(db, alice, desks[0], lab, utc(2026, 11, 9, 21, 30), utc(2026, 11, 9, 23, 30))
    # The 10th: bob 08:00-12:00 local, carol 09:00-10:00 local (two at once), alice again 12:00-13:00
    # (starting as bob's ends: never three at once).
    await _lease(db, bob, desks[1], lab, utc(2026, 11, 10, 6, 0), utc(2026, 11, 10, 10, 0))
    await _lease(db, carol, desks[2], lab, utc(2026, 11, 10, 7, 0), utc(2026, 11, 10, 8, 0))
    await _lease(db, alice, desks[0], lab, utc(2026, 11, 10, 10, 0), utc(2026, 11, 10, 11, 0))
    # Console sessions: two on the 10th (one written just after local midnight, started the 10th).
    for started, seconds, at in (
        (utc(2026, 11, 10, 6, 5), 1800, utc(2026, 11, 10, 6, 35)),
        (utc(2026, 11, 10, 21, 30), 3600, utc(2026, 11, 10, 22, 30)),
    ):
        await _audit(
            db, at, "console.session", vm_id=desks[1], started_at=started.isoformat(), seconds=seconds
        )
    # A console of a VM in no pool counts nowhere.
    await _audit(db, utc(2026, 11, 10, 9, 0), "console.session", vm_id=99999, seconds=60)
    # Refusals: two for want of a desktop, one for another reason (not counted).
    for reason in ("no_free_desktop", "no_free_desktop", "desktop_limit"):
        await _audit(db, utc(2026, 11, 10, 8, 30), "desktop_refused", pool_id=lab, refusal=reason)
    return dashboard


def _day(report: dict[str, object], day: str, pool: str) -> dict[str, object]:
    rows = [row for row in report["days"] if row["day"] == day and row["pool"] == pool]  # type: ignore[attr-defined]
    assert len(rows) == 1, report
    return rows[0]


async def test_the_report_counts_each_pools_days_in_the_dashboards_time_zone_and_refuses_bad_ranges(
    used: RunningDashboard,
) -> None:
    admin = await used.admin()
    answer = await admin.get("/api/v1/admin/usage?from=2026-11-09&to=2026-11-11")
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["time_zone"] == ZONE and report["first"] == "2026-11-09"
    assert [row["day"] for row in report["days"]] == ["2026-11-09"] * 2 + ["2026-11-10"] * 2 + [
        "2026-11-11"
    ] * 2
    assert _day(report, "2026-11-09", "lab") | {"pool_id": 0} == {
        "day": "2026-11-09",
        "pool": "lab",
        "pool_id": 0,
        "peak_desktops": 1,
        "desktops_handed_out": 1,
        "hours_used": 0.5,
        "console_sessions": 0,
        "console_hours": 0.0,
        "refusals": 0,
    }
    tenth = _day(report, "2026-11-10", "lab")
    assert tenth["peak_desktops"] == 2, "bob and carol at once; alice only after bob"
    assert tenth["desktops_handed_out"] == 3
    assert tenth["hours_used"] == 1.5 + 4 + 1 + 1
    assert (tenth["console_sessions"], tenth["console_hours"]) == (2, 1.5)
    assert tenth["refusals"] == 2
    assert _day(report, "2026-11-10", "office")["hours_used"] == 0
    assert _day(report, "2026-11-11", "lab")["peak_desktops"] == 0

    office_only = (await admin.get("/api/v1/admin/usage?from=2026-11-10&to=2026-11-10&pool=2")).json()
    assert {row["pool"] for row in office_only["days"]} == {"office"}

    exported = await admin.get("/usage.csv?from=2026-11-10&to=2026-11-10")
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    assert "usage-2026-11-10-2026-11-10.csv" in exported.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(row["pool"], row["peak_desktops"], row["hours_used"], row["refusals"]) for row in rows] == [
        ("lab", "2", "7.50", "2"),
        ("office", "0", "0.00", "0"),
    ]

    page = await admin.get("/usage?from=2026-11-09&to=2026-11-11")
    assert page.status_code == 200
    assert 'id="usage-chart"' in page.text and 'data-day="2026-11-10" data-pool="1"' in page.text
    assert '<td class="text-end" data-column="refusals">2</td>' in page.text

    # A report that cannot be made is refused, naming why; only administrators get one.
    for query in (
        "from=2026-11-10&to=2026-11-01",
        "from=2024-01-01&to=2026-01-01",
        "from=yesterday",
        "to=0001-01-05",
        "to=9999-12-31",
        "pool=\u00b2",
        "pool=99999999999999999999999",
    ):
        answer = await admin.get(f"/api/v1/admin/usage?{query}")
        assert answer.status_code == 400 and answer.json()["error"] == "invalid", query
        assert (await admin.get(f"/usage.csv?{query}")).status_code == 400
    page = await admin.get("/usage?from=2026-11-10&to=2026-11-01")
    assert page.status_code == 400 and 'id="usage-error"' in page.text
    anonymous = used.client()
    assert (await anonymous.get("/api/v1/admin/usage")).status_code == 401


async def test_a_pool_without_a_free_desktop_refuses_and_the_report_counts_it(
    dashboard_factory: DashboardFactory,
) -> None:
    dashboard = await dashboard_factory()
    db, broker = dashboard.services.db, dashboard.services.broker
    hv = await add_connected_hypervisor(dashboard.services.hypervisors, db, "usage-hv")
    desk = await add_vm(db, "only-desk", hv)
    alice, bob = await add_client(db, "alice"), await add_client(db, "bob")
    pool = await add_pool(db, "tiny", [desk], [alice, bob])
    # alice holds the only desktop (a lease written as the broker writes it); bob asks for one.
    now = dashboard.clock.now()
    await _lease(db, alice, desk, pool, now - timedelta(minutes=10), None)
    await db.execute(vms.update().where(vms.c.id == desk).values(assigned_user_id=alice))
    answer = await broker.request_desktop(
        pool_id=pool, user_id=bob, username="bob", groups=(), client_address="192.0.2.7"
    )
    assert answer is not None and answer.refusal == "no_free_desktop", answer
    refused = await dashboard.services.audit.recent(action="desktop_refused")
    assert [(r["actor"], r["target"], r["details"]["refusal"]) for r in refused] == [
        ("bob", "tiny", "no_free_desktop")
    ]
    admin = await dashboard.admin()
    report = (await admin.get("/api/v1/admin/usage")).json()
    today = report["days"][-1]
    assert (today["pool"], today["refusals"], today["peak_desktops"]) == ("tiny", 1, 1)


@pytest.mark.browser
async def test_the_usage_page_draws_its_chart_in_a_browser(
    used: RunningDashboard, browser: BrowserFactory
) -> None:
    def scenario() -> None:
        with browser.session() as driver:
            log_in(driver, used.url, "admin", used.admin_password)
            driver.get(f"{used.url}/usage?from=2026-11-09&to=2026-11-11")
            chart = driver.find_element(By.ID, "usage-chart")
            # Two pools' lines and the refusals' bars, drawn by Chart.js (served from node_modules).
            wait(driver).until(lambda _: chart.get_attribute("data-drawn") == "3")
            painted = driver.execute_script(
                "var c = arguments[0], d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                "var n = 0; for (var i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;",
                chart,
            )
            assert painted > 1000, f"only {painted} pixels of the chart are painted"
            assert severe_console_errors(driver) == []

    await asyncio.to_thread(scenario)
