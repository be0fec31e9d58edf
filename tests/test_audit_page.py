"""The Audit page: filters by user, VM, pool, action and time, pages newest first without overlap,
console sessions with their duration and bytes, CSV of what the filters name, links from the VM,
user and pool pages, and helpful empty states; administrators only."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.db.schema import audit_log
from tests.broker.records import add_client, add_hypervisor, add_pool, add_vm
from tests.dashboard import BrowserLikeClient, DashboardFactory, RunningDashboard


class AuditWorld:
    def __init__(
        self, dashboard: RunningDashboard, admin: BrowserLikeClient, pool_id: int, desk_id: int
    ) -> None:
        self.dashboard, self.admin, self.pool_id, self.desk_id = dashboard, admin, pool_id, desk_id

    async def ids(self, query: str) -> list[int]:
        answer = await self.admin.get(f"/audit?{query}")
        assert answer.status_code == 200, answer.text
        return [int(found) for found in re.findall(r'data-audit-id="(\d+)"', answer.text)]


@pytest.fixture
async def world(dashboard_factory: DashboardFactory) -> AuditWorld:
    dashboard = await dashboard_factory()
    services = dashboard.services
    db, audit = services.db, services.audit
    hv = await add_hypervisor(db, "audit-hv", state="down")
    desk = await add_vm(db, "desk-1", hv)
    alice = await add_client(db, "alice")
    pool_id = await add_pool(db, "lab", [desk], [alice])
    admin = await dashboard.admin()
    # 60 records of another user first (older), so that alice's are on the first page.
    for index in range(60):
        await audit.record("vm_start", actor="bob", target=f"other-{index}")
    await audit.record("desktop_assigned", actor="alice", target="desk-1", pool="lab", pool_id=pool_id)
    await audit.record(
        "console.session",
        actor="alice",
        target="desk-1",
        client_address="192.0.2.9",
        vm_id=desk,
        via="websocket",
        seconds=1800.5,
        bytes_to_client=3 * 1024 * 1024,
        bytes_to_vm=2048,
    )
    await audit.record(
        "desktop_refused", actor="carol", target="lab", pool_id=pool_id, refusal="no_free_desktop"
    )
    await audit.record("vm_poweroff", actor="=cmd|' /C calc'!A0", target="desk-1")
    return AuditWorld(dashboard, admin, pool_id, desk)


async def _actions(world: AuditWorld, query: str) -> list[str]:
    answer = await world.admin.get(f"/audit?{query}")
    assert answer.status_code == 200, answer.text
    return re.findall(r'data-action="([^"]+)"', answer.text)


async def test_each_filter_names_its_records_and_the_vm_user_and_pool_pages_link_to_them(
    world: AuditWorld,
) -> None:
    assert await _actions(world, "user=alice") == ["console.session", "desktop_assigned"]
    assert await _actions(world, "vm=desk-1") == ["vm_poweroff", "console.session", "desktop_assigned"]
    # The pool: a desktop handed out of it, a request it refused, and its own creation by the test rows.
    assert await _actions(world, f"pool={world.pool_id}") == ["desktop_refused", "desktop_assigned"]
    assert await _actions(world, "action=desktop_refused") == ["desktop_refused"]
    assert await _actions(world, "user=alice&action=desktop_assigned") == ["desktop_assigned"]
    now = world.dashboard.clock.now()
    later = (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    earlier = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    assert len(await _actions(world, f"since={earlier}&until={later}&user=bob")) == 50, "one page"
    nothing = await world.admin.get(f"/audit?since={later}")
    assert 'id="audit-empty"' in nothing.text and "No record matches these filters." in nothing.text
    assert 'href="/audit">Clear filters' in nothing.text
    wrong = await world.admin.get("/audit?since=tomorrow")
    assert wrong.status_code == 400 and 'id="audit-error"' in wrong.text
    for hostile in ("pool=\u00b2", "pool=99999999999999999999999", "since=9999-12-31T23:59:59-12:00"):
        refused = await world.admin.get(f"/audit?{hostile}")
        assert refused.status_code == 400 and 'id="audit-error"' in refused.text, hostile
    # A page cut no row id can reach is the first page, not a failure.
    assert len(await world.ids("before=99999999999999999999999")) == 50

    # The VM table, the users page and the pool's page link here; only administrators get in.
    users = await world.admin.get("/users")
    assert 'href="/audit?user=alice"' in users.text
    vms = await world.admin.get(f"/vms/rows?ids={world.desk_id}")
    assert 'href="/audit?vm=desk-1"' in vms.text
    pool = await world.admin.get(f"/pools/{world.pool_id}")
    assert f'href="/audit?pool={world.pool_id}"' in pool.text
    anonymous = world.dashboard.client()
    assert (await anonymous.get("/audit")).status_code in (303, 307)
    assert (await anonymous.get("/audit.csv")).status_code in (303, 307)


async def test_pages_go_back_in_time_console_sessions_show_duration_and_bytes_and_the_csv_holds_all(
    world: AuditWorld,
) -> None:
    first = await world.admin.get("/audit")
    first_ids = [int(found) for found in re.findall(r'data-audit-id="(\d+)"', first.text)]
    assert len(first_ids) == 50 and first_ids == sorted(first_ids, reverse=True)
    older = re.search(r'href="(/audit\?[^"]*before=\d+[^"]*)" id="audit-older"', first.text)
    assert older is not None
    second = await world.admin.get(older.group(1).replace("&amp;", "&"))
    second_ids = [int(found) for found in re.findall(r'data-audit-id="(\d+)"', second.text)]
    assert second_ids and max(second_ids) < min(first_ids)
    assert 'id="audit-newest"' in second.text
    total = await world.dashboard.services.db.fetch_val(sa.select(sa.func.count()).select_from(audit_log))
    assert len(first_ids) + len(second_ids) == min(total, 100)

    console = await world.admin.get("/audit?action=console.session")
    row = console.text[console.text.index('data-action="console.session"') :]
    row = row[: row.index("</tr>")]
    assert 'data-console-duration="1800"' in row and "30 minutes" in row
    assert "3.0 MiB" in row and "2.0 KiB" in row and "192.0.2.9" in row

    answer = await world.admin.get("/audit.csv?vm=desk-1")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [row["action"] for row in rows] == ["vm_poweroff", "console.session", "desktop_assigned"]
    assert rows[0]["actor"] == "'=cmd|' /C calc'!A0", "a spreadsheet shows it, never runs it"
    assert "bytes_to_client=3145728" in rows[1]["details"]
    everything = await world.admin.get("/audit.csv")
    total = await world.dashboard.services.db.fetch_val(sa.select(sa.func.count()).select_from(audit_log))
    assert len(list(csv.DictReader(io.StringIO(everything.text)))) == total, "every page, not only the first"
