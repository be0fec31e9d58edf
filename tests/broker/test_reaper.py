"""The lease reaper on a running dashboard: expired leases end, desktops return, audit and live events."""

from __future__ import annotations

from app.db.records import LeaseRecord
from app.db.schema import audit_log, leases, vms
from app.vms.records import Vm
from tests.broker.records import add_client, add_hypervisor, add_pool, add_vm, the_pool
from tests.dashboard import RunningDashboard
from tests.rows import the_record, the_row


async def test_expired_lease_is_reaped_and_the_desktop_returns_to_the_pool(
    dashboard: RunningDashboard,
) -> None:
    services = dashboard.services
    db = services.db
    hv = await add_hypervisor(db)
    a, b = await add_client(db, "first"), await add_client(db, "second")
    vm = await add_vm(db, "only", hv)
    pool = await the_pool(db, await add_pool(db, "p", [vm], [a, b], reset_on_handout=False))
    claim = await services.broker.allocator.claim(pool, a)
    fresh = await services.broker.allocator.claim(pool, b)
    assert fresh.refusal == "no_free_desktop"
    subscription = services.hub.subscribe(is_admin=False, user_id=a)

    await services.broker.leases.reap_expired()  # not expired yet: nothing happens
    held = leases.select().where(leases.c.id == claim.lease_id)
    assert (await the_record(db, LeaseRecord, held)).ended_at is None

    dashboard.clock.advance(pool.lease_timeout_min * 60 + 1)
    await services.broker.leases.reap_expired()

    lease = await the_record(db, LeaseRecord, held)
    assert lease.ended_at is not None and lease.end_reason == "expired"
    row = await the_record(db, Vm, vms.select().where(vms.c.id == vm))
    assert row.assigned_user_id is None and row.last_user_id == a
    audit = await the_row(db, audit_log.select().where(audit_log.c.action == "lease_expired"))
    assert audit["target"] == "only" and '"user": "first"' in audit["details_json"]
    event = subscription.queue.get_nowait()
    assert event.topic == "lease" and event.data["state"] == "ended" and event.data["reason"] == "expired"
    subscription.close()
    handed = await services.broker.allocator.claim(pool, b)
    assert handed.vm_id == vm and handed.previous_user_id == a
