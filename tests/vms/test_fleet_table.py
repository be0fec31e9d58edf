"""The VM table at fleet size, on a few hundred VM rows of rows-only hypervisors: search, filters,
sorting, pages, collapsed initial machines remembered by the server, the rows a live page asks
for, and actions on many VMs through the admin API."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from app.db.schema import audit_log, vms
from app.vms.listing import Listing, arrange, matching_ids
from app.vms.table import VmRow, VmTable, build_table
from tests.dashboard import BrowserLikeClient, RunningDashboard
from tests.vms.fleet import Fleet, build_fleet


@dataclass
class FleetPage:
    dashboard: RunningDashboard
    fleet: Fleet
    admin: BrowserLikeClient

    async def table(self) -> VmTable:
        service = self.dashboard.services.vms
        assert service is not None
        return await build_table(self.dashboard.services.db, service.operations, service.thumbnails)


@pytest.fixture
async def fleet_page(dashboard: RunningDashboard) -> AsyncIterator[FleetPage]:
    fleet = await build_fleet(dashboard.services.db, 300, hosts=3, simple=6, holders=40)
    yield FleetPage(dashboard, fleet, await dashboard.admin())


def names(html: str) -> list[str]:
    return re.findall(r'class="vm-row[^"]*" data-vm-id="\d+" data-vm-name="([^"]+)"', html)


def states(html: str) -> list[str]:
    return re.findall(r'data-vm-name="[^"]+"\s+data-kind="\w+" data-group="[^"]+" data-state="(\w+)"', html)


async def test_rows_are_paged_filtered_searched_and_sorted(fleet_page: FleetPage) -> None:
    table = await fleet_page.table()
    assert table.count == 300
    first = arrange(table, Listing(), per_page=100)
    assert (first.pages, first.first, first.last, first.matching) == (3, 1, 100, 300)
    assert first.sections[0].lead is not None and first.sections[0].lead.vm.name == "fl-base1"
    # The second page goes on with fl-base1's desktops, naming the section again.
    second = arrange(table, Listing(page=2), per_page=100)
    assert second.sections[0].key == first.sections[-1].key and second.sections[0].continued
    assert not second.sections[0].lead_shown
    assert set(first.row_ids).isdisjoint(second.row_ids)
    # Names sort naturally: desk0002 after desk0001 whatever the digits.
    desks = [row.vm.name for row in first.sections[0].rows[:3]]
    assert desks == ["fl1-desk0001", "fl1-desk0002", "fl1-desk0003"]

    crashed = arrange(table, Listing.from_query({"state": "crashed"}), per_page=500)
    in_db = await fleet_page.dashboard.services.db.fetch_val(
        sa.select(sa.func.count()).select_from(vms).where(vms.c.state == "crashed")
    )
    rows = [row for section in crashed.sections for row in section.rows]
    assert crashed.matching == len(rows) == in_db > 0
    assert all(row.vm.state == "crashed" for row in rows)
    # Their initial machine is named as context (it is shut off, so it does not match itself).
    assert all(not section.lead_shown and section.lead is not None for section in crashed.sections)

    # Every word of a search must match: name, user, pool or hypervisor.
    found = matching_ids(table, Listing.from_query({"q": "fl2 desk001"}))
    assert len(found) == 10  # fl2-desk0010 to fl2-desk0019
    held = matching_ids(table, Listing.from_query({"flag": "in_use"}))
    assigned = await fleet_page.dashboard.services.db.fetch_all(
        sa.select(vms.c.id).where(vms.c.assigned_user_id.is_not(None))
    )
    assert sorted(held) == sorted(row["id"] for row in assigned) and held
    assert held == matching_ids(table, Listing.from_query({"user": "fl-user"}))
    nobody = Listing.from_query({"user": "none", "pool": "none"})
    assert {table_row.vm.kind for table_row in _rows(table) if nobody.matches(table_row)} == {
        "source",
        "initial",
        "simple",
    }
    # Sorting by state puts the crashed first, and descending reverses it.
    by_state = arrange(table, Listing(sort="state"), per_page=500)
    assert by_state.sections[0].rows[0].vm.state == "crashed"
    reverse = arrange(table, Listing(sort="state", desc=True), per_page=500)
    assert reverse.sections[0].rows[0].vm.state == "shutoff"
    # Unknown values are dropped, never an error; a page past the end is the last page.
    odd = Listing.from_query({"state": "exploded", "sort": "'; drop table", "page": "99", "hypervisor": "x"})
    assert (odd.state, odd.sort, odd.hypervisor) == ("", "name", None)
    assert arrange(table, odd, per_page=100).number == 3


def _rows(table: VmTable) -> list[VmRow]:
    rows: list[VmRow] = []
    for lead in table.initials:
        rows += [lead, *lead.children]
    return [*rows, *table.sources, *table.simple, *table.unclassified]


async def test_a_collapsed_initial_hides_its_desktops_until_a_filter_is_in_force(
    fleet_page: FleetPage,
) -> None:
    table = await fleet_page.table()
    base1 = fleet_page.fleet.initial_ids[0]
    folded = arrange(table, Listing(), collapsed={base1}, per_page=100)
    section = folded.sections[0]
    assert section.lead_shown and section.collapsed and section.rows == [] and section.hidden == 96
    assert folded.sections[1].lead is not None and folded.sections[1].lead.vm.name == "fl-base2"
    searched = arrange(table, Listing(q="fl1-desk0001"), collapsed={base1}, per_page=100)
    assert [row.vm.name for row in searched.sections[0].rows] == ["fl1-desk0001"]


async def test_the_page_follows_its_query_and_the_view_is_kept_by_the_server(fleet_page: FleetPage) -> None:
    admin = fleet_page.admin
    page = await admin.get("/vms?state=paused&sort=name&dir=desc")
    assert page.status_code == 200
    shown = names(page.text)
    assert shown and set(states(page.text)) == {"paused"}
    assert shown == sorted(shown, reverse=True)
    assert '<option value="paused" selected>' in page.text
    # The fragment the live page fetches, for page 2 of everything.
    fragment = await admin.get("/vms/table?page=2")
    assert "Showing <strong>101\u2013200</strong> of 300 VMs" in fragment.text
    # Page 1 held fl-base1 with its 96 desktops and the start of fl-base2's.
    assert "fl-base2 (continued)" in fragment.text

    base1 = fleet_page.fleet.initial_ids[0]
    changed = await admin.patch(
        "/api/v1/admin/me/vm-table", json={"collapse": [base1], "density": "comfortable", "per_page": 50}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["view"] == {"collapsed": [base1], "density": "comfortable", "per_page": 50}
    # Another browser of the same admin finds the table as they left it.
    elsewhere = await fleet_page.dashboard.admin()
    page = await elsewhere.get("/vms")
    assert "Show its 96 VDI machines" in page.text and "fl1-desk0001" not in names(page.text)
    assert '<th scope="col">Screen</th>' in page.text
    assert "Showing <strong>1\u201350</strong>" in page.text
    assert (await elsewhere.patch("/api/v1/admin/me/vm-table", json={"expand": [base1]})).status_code == 200
    assert "fl1-desk0001" in names((await admin.get("/vms")).text)
    refused = await admin.patch("/api/v1/admin/me/vm-table", json={"per_page": 7, "density": "tiny"})
    assert refused.status_code == 400 and set(refused.json()["fields"]) == {"per_page", "density"}


async def test_a_live_page_fetches_many_rows_in_one_request(fleet_page: FleetPage) -> None:
    ids = [*fleet_page.fleet.desktop_ids[:3], fleet_page.fleet.initial_ids[1], 999_999]
    rows = await fleet_page.admin.get("/vms/rows?ids=" + ",".join(map(str, ids)))
    assert rows.status_code == 200
    assert names(rows.text) == ["fl1-desk0001", "fl1-desk0002", "fl1-desk0003", "fl-base2"]
    assert rows.text.count('data-parent="') == 3


async def test_the_api_lists_the_ids_matching_a_filter(fleet_page: FleetPage) -> None:
    host = fleet_page.fleet.hypervisor_ids[0]
    answer = await fleet_page.admin.get(f"/api/v1/admin/vms/ids?state=crashed&hypervisor={host}")
    ids = answer.json()["ids"]
    rows = await fleet_page.dashboard.services.db.fetch_all(sa.select(vms.c.id).where(vms.c.id.in_(ids)))
    assert ids and len(rows) == len(ids)


async def test_maintenance_for_many_vms_is_one_request_audited_per_vm(fleet_page: FleetPage) -> None:
    db = fleet_page.dashboard.services.db
    chosen = fleet_page.fleet.desktop_ids[10:60]
    before = await db.fetch_all(
        sa.select(vms.c.id).where(vms.c.id.in_(chosen), vms.c.maintenance.is_(sa.true()))
    )
    already = {row["id"] for row in before}
    assert len(already) == 1  # fl1-desk0050: every fiftieth desktop of the fleet is in maintenance
    subscriber = fleet_page.dashboard.services.hub.subscribe(is_admin=True, user_id=1)
    try:
        answer = await fleet_page.admin.post(
            "/api/v1/admin/vms/bulk/maintenance", json={"vm_ids": chosen, "maintenance": True}
        )
        assert answer.status_code == 200, answer.text
        changed = {vm["id"] for vm in answer.json()["vms"]}
        assert changed == set(chosen) - already
        assert all(vm["maintenance"] for vm in answer.json()["vms"])
        rows = await db.fetch_all(sa.select(vms.c.maintenance).where(vms.c.id.in_(chosen)))
        assert all(row["maintenance"] for row in rows)
        # One audit entry per VM that changed, and one live message each.
        audited = await db.fetch_all(audit_log.select().where(audit_log.c.action == "vm_flags"))
        assert len(audited) == len(changed) and {row["actor"] for row in audited} == {"admin"}
        assert all(json.loads(row["details_json"]) == {"maintenance": True} for row in audited)
        announced: set[int] = set()
        while not subscriber.queue.empty():
            event = subscriber.queue.get_nowait()
            if event.topic == "vm":
                announced.add(event.data["id"])
        assert announced == changed
    finally:
        subscriber.close()
    refused = await fleet_page.admin.post(
        "/api/v1/admin/vms/bulk/maintenance", json={"vm_ids": [], "maintenance": True}
    )
    assert refused.status_code == 400 and "vm_ids" in refused.json()["fields"]


async def test_power_for_many_vms_reports_what_could_not_be_done(fleet_page: FleetPage) -> None:
    """The rows-only hypervisors cannot be reached: the operation says so per VM, and a VM an
    operation already holds is left out and named."""
    db = fleet_page.dashboard.services.db
    chosen = fleet_page.fleet.desktop_ids[:5]
    await db.execute(sa.update(vms).where(vms.c.id == chosen[0]).values(operation_id=4242))
    answer = await fleet_page.admin.post(
        "/api/v1/admin/vms/bulk/power", json={"vm_ids": chosen, "action": "start"}
    )
    assert answer.status_code == 202, answer.text
    operation = answer.json()["operation"]
    assert sorted(operation["vm_ids"]) == sorted(chosen[1:])
    service = fleet_page.dashboard.services.vms
    assert service is not None
    finished = await service.operations.wait(operation["id"])
    assert finished.state == "failed"
    assert "4 failed" in finished.error and "left out (busy: fl1-desk0001)" in finished.error
    # Held VMs are free again.
    held = await db.fetch_all(sa.select(vms.c.id).where(vms.c.operation_id == operation["id"]))
    assert held == []


async def test_deleting_many_vms_is_planned_and_refuses_what_cannot_go(fleet_page: FleetPage) -> None:
    db = fleet_page.dashboard.services.db
    fleet = fleet_page.fleet
    base2 = fleet.initial_ids[1]
    locked = fleet.desktop_ids[1]
    await db.execute(sa.update(vms).where(vms.c.id == locked).values(locked=True))
    chosen = [fleet.desktop_ids[0], locked, base2, fleet.simple_ids[0]]
    answer = await fleet_page.admin.post(
        "/api/v1/admin/vms/bulk/delete-plan", json={"vm_ids": chosen, "remove_disks": True}
    )
    assert answer.status_code == 200, answer.text
    plan = answer.json()["plan"]
    assert sorted(plan["vms"]) == ["fl-simple001", "fl1-desk0001"]
    assert plan["files"] == ["/var/lib/kvm-vdi/images/fl1-desk0001.qcow2"]
    reasons = {item["name"]: item["reason"] for item in plan["refused"]}
    assert set(reasons) == {"fl1-desk0002", "fl-base2"}
    assert "locked" in reasons["fl1-desk0002"] and "not chosen" in reasons["fl-base2"]
    # A confirmation of another list is refused before anything happens.
    wrong = await fleet_page.admin.post(
        "/api/v1/admin/vms/bulk/delete",
        json={
            "vm_ids": chosen,
            "remove_disks": True,
            "confirm_vms": ["fl1-desk0001"],
            "confirm_files": plan["files"],
        },
    )
    assert wrong.status_code == 400 and "confirm_vms" in wrong.json()["fields"]
    assert await db.fetch_val(sa.select(sa.func.count()).select_from(vms).where(vms.c.id.in_(chosen))) == 4
