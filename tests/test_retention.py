"""Retention: as the dashboard's clock moves past ``[audit] retention_days``, its purge job deletes the
old audit records (leaving one record of the purge) and leases that ended before then, the API tokens
and console tickets that expired or were revoked more than a day ago, and keeps everything younger."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.broker.tokens import issue_token, revoke_token
from app.db.schema import api_tokens, audit_log, console_tickets, leases
from app.retention import purge
from tests.broker.records import add_client, add_hypervisor, add_vm
from tests.dashboard import DashboardFactory, RunningDashboard
from tests.waiting import eventually


@pytest.fixture
async def thirty_days(dashboard_factory: DashboardFactory) -> RunningDashboard:
    """A dashboard keeping 30 days, whose purge job runs once an hour (tests tick it themselves)."""
    return await dashboard_factory(audit={"retention_days": 30, "purge_interval": 3600})


async def test_the_purge_job_deletes_old_audit_records_and_dead_tokens_as_the_clock_moves(
    thirty_days: RunningDashboard,
) -> None:
    dashboard = thirty_days
    services, clock, db = dashboard.services, dashboard.clock, dashboard.services.db
    # Records of today: an admin's log-in and more, written by the dashboard itself.
    await dashboard.admin()
    today = await db.fetch_val(sa.select(sa.func.count()).select_from(audit_log))
    assert today >= 1
    user = await add_client(db, "tokens-user")
    await issue_token(db, user, ttl=3600, now=clock.now())
    await issue_token(db, user, ttl=365 * 86400, now=clock.now())
    await issue_token(db, user, ttl=365 * 86400, now=clock.now())
    revoked_id = await db.fetch_val(sa.select(api_tokens.c.id).order_by(api_tokens.c.id.desc()).offset(1))
    await revoke_token(db, revoked_id)

    # 29 days on: nothing is old enough yet, and the revoked token went a day after its revocation.
    clock.advance(29 * 86400)
    first = await services.retention.tick()
    assert first.audit_records == 0
    assert (
        await db.fetch_val(
            sa.select(sa.func.count()).select_from(audit_log).where(audit_log.c.action != "audit_purged")
        )
        >= today
    )
    assert first.api_tokens == 2, "the expired token and the revoked one"
    left = await db.fetch_all(sa.select(api_tokens.c.id))
    assert len(left) == 1

    # A record written "now" on the moved clock stays; 2 more days and today's records are 31 days old.
    await db.execute(
        audit_log.insert().values(at=clock.now(), actor="later", action="later_record", details_json="{}")
    )
    clock.advance(2 * 86400)
    services.retention.wake()  # the job's own loop, as it runs every purge_interval

    async def purged() -> list[dict[str, object]]:
        rows = await db.fetch_all(audit_log.select().where(audit_log.c.action == "audit_purged"))
        return [
            found for found in (json.loads(row["details_json"]) for row in rows) if found["audit_records"]
        ]

    details = (await eventually(purged, "the purge job's record of the audit records it deleted"))[-1]
    assert details["audit_records"] >= today and details["retention_days"] == 30
    cutoff = clock.now() - timedelta(days=30)
    remaining = await db.fetch_all(sa.select(audit_log.c.action, audit_log.c.at))
    assert [
        row["action"] for row in remaining if row["at"] < cutoff and row["action"] != "audit_purged"
    ] == []
    assert "later_record" in {row["action"] for row in remaining}
    assert len(await db.fetch_all(sa.select(api_tokens.c.id))) == 1, "the lasting token stays"


async def test_retention_zero_keeps_the_audit_log_and_batches_cover_every_old_record(
    dashboard_factory: DashboardFactory,
) -> None:
    dashboard = await dashboard_factory()
    # The dashboard's own job (which purges once as it starts) must not take rows from under the test.
    await dashboard.services.retention.stop()
    db, now = dashboard.services.db, dashboard.clock.now()
    old = now - timedelta(days=400)
    for index in range(7):
        await db.execute(audit_log.insert().values(at=old, action=f"old{index}", details_json="{}"))
    kept = await purge(db, now=now, retention_days=0, batch=3)
    assert (kept.audit_records, kept.cutoff) == (0, None)
    gone = await purge(db, now=now, retention_days=365, batch=3)
    assert gone.audit_records == 7
    assert not await db.fetch_all(audit_log.select().where(audit_log.c.action.like("old%")))


async def test_the_purge_job_deletes_ended_leases_past_the_retention_and_dead_console_tickets(
    thirty_days: RunningDashboard,
) -> None:
    services, clock, db = thirty_days.services, thirty_days.clock, thirty_days.services.db
    user = await add_client(db, "retention-user")
    vm = await add_vm(db, "retention-desk", await add_hypervisor(db, "retention-hv", state="down"))
    start = clock.now()

    async def lease(ended_at: object) -> int:
        # Expiring far ahead: the lease reaper leaves the active one alone as the clock moves.
        lease_id: int = await db.execute(
            leases.insert().values(
                user_id=user,
                vm_id=vm,
                started_at=start,
                expires_at=start + timedelta(days=400),
                ended_at=ended_at,
            )
        )
        return lease_id

    async def ticket(name: str, expires_at: object) -> None:
        await db.execute(
            console_tickets.insert().values(
                token_hash=name, user_id=user, vm_id=vm, host="127.0.0.1", port=5900, expires_at=expires_at
            )
        )

    ended_early = await lease(start + timedelta(hours=1))
    still_held = await lease(None)  # an active lease is never purged, however old
    await ticket("expired-at-once", start + timedelta(seconds=60))
    await ticket("expires-later", start + timedelta(days=29, hours=1))

    # 29 days on: the leases are younger than the retention; the first ticket is a day past its expiry.
    clock.advance(29 * 86400)
    ended_lately = await lease(clock.now())
    first = await services.retention.tick()
    assert (first.leases, first.console_tickets) == (0, 1)
    assert [row["token_hash"] for row in await db.fetch_all(sa.select(console_tickets.c.token_hash))] == [
        "expires-later"
    ]

    # 2 more days: the lease that ended first is past the retention, the other ticket a day expired.
    clock.advance(2 * 86400)
    second = await services.retention.tick()
    assert (second.leases, second.console_tickets) == (1, 1)
    remaining = {row["id"] for row in await db.fetch_all(sa.select(leases.c.id))}
    assert ended_early not in remaining and {still_held, ended_lately} <= remaining
    assert await db.fetch_all(sa.select(console_tickets.c.id)) == []
    records = await db.fetch_all(audit_log.select().where(audit_log.c.action == "audit_purged"))
    assert any(json.loads(row["details_json"])["leases"] == 1 for row in records)
