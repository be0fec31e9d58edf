"""A lease and its audit record are stored together or not at all: when the audit record of a
hand-out or of a lease's end cannot be written (the database fails in between, simulated here
by a trigger refusing that record), the lease is not handed out, or not ended, either."""

from __future__ import annotations

import httpx
import sqlalchemy as sa
from databases import Database

from app.db.records import LeaseRecord, fetch_records
from app.db.schema import audit_log, leases, users, vms
from app.vms.records import Vm
from tests.broker.records import add_client, add_connected_hypervisor, add_pool, add_vm, the_pool
from tests.broker.test_api import api_login, bearer
from tests.dashboard import RunningDashboard
from tests.rows import the_record


async def refuse_audit(db: Database, action: str) -> None:
    """Inserting an audit record of ``action`` fails from now on."""
    if db.url.dialect == "sqlite":
        body = f"WHEN NEW.action = '{action}' BEGIN SELECT RAISE(ABORT, 'audit unavailable'); END"
        await db.execute(sa.text(f"CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log {body}"))
    else:
        await db.execute(
            sa.text(
                "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log FOR EACH ROW BEGIN "
                f"IF NEW.action = '{action}' THEN "
                "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'audit unavailable'; END IF; END"
            )
        )


async def allow_audit(db: Database) -> None:
    await db.execute(sa.text("DROP TRIGGER refuse_audit"))


async def one_desktop_pool(dashboard: RunningDashboard) -> tuple[int, int]:
    """A pool of one running desktop (the test driver's own domain) for user "ada": (VM id, pool id)."""
    db = dashboard.services.db
    hv = await add_connected_hypervisor(dashboard.services.hypervisors, db)
    vm_id = await add_vm(db, "test", hv, state="running")
    pool = await add_pool(db, "atomic", [vm_id], [await add_client(db, "ada")], reset_on_handout=False)
    return vm_id, pool


async def test_no_lease_is_handed_out_without_its_audit_record(dashboard: RunningDashboard) -> None:
    db = dashboard.services.db
    vm_id, pool = await one_desktop_pool(dashboard)
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as http:
        token = await api_login(http, "ada")
        await refuse_audit(db, "desktop_assigned")
        refused = await http.post(f"/api/v1/pools/{pool}/desktop", headers=bearer(token))
        assert refused.status_code not in (200, 202, 204), refused.text
        assert await db.fetch_all(leases.select()) == []
        assert (await the_record(db, Vm, vms.select().where(vms.c.id == vm_id))).assigned_user_id is None
        await allow_audit(db)

        await http.post(f"/api/v1/pools/{pool}/desktop", headers=bearer(token))
        (lease,) = await fetch_records(db, LeaseRecord, leases.select())
        assigned = await db.fetch_all(audit_log.select().where(audit_log.c.action == "desktop_assigned"))
        assert [f'"lease_id": {lease.id}' in row["details_json"] for row in assigned] == [True]


async def test_no_lease_ends_without_its_audit_record(dashboard: RunningDashboard) -> None:
    db = dashboard.services.db
    vm_id, pool = await one_desktop_pool(dashboard)
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as http:
        token = await api_login(http, "ada")
        # Held as a hand-out holds it (a request through the API would end it at once: the test
        # driver's domain has no display to open a console on).
        holder = await db.fetch_val(sa.select(users.c.id).where(users.c.username == "ada"))
        pool_record = await the_pool(db, pool)
        await dashboard.services.broker.allocator.claim(pool_record, holder, client_address="192.0.2.1")
        (lease,) = await fetch_records(db, LeaseRecord, leases.select())
        await refuse_audit(db, "lease_released")
        refused = await http.post(f"/api/v1/leases/{lease.id}/release", headers=bearer(token))
        assert refused.status_code not in (200, 202, 204), refused.text
        still = await the_record(db, LeaseRecord, leases.select().where(leases.c.id == lease.id))
        assert still.ended_at is None, "the lease stays until its end can be recorded"
        assert (await the_record(db, Vm, vms.select().where(vms.c.id == vm_id))).assigned_user_id is not None
        await allow_audit(db)

        released = await http.post(f"/api/v1/leases/{lease.id}/release", headers=bearer(token))
        assert released.status_code == 204
        ended = await db.fetch_all(audit_log.select().where(audit_log.c.action == "lease_released"))
        assert len(ended) == 1 and f'"lease_id": {lease.id}' in ended[0]["details_json"]
