"""Retention: as the dashboard's clock moves past ``[audit] retention_days``, its purge job deletes the
old audit records (leaving one record of the purge) and the API tokens that expired or were revoked
more than a day ago, and keeps everything younger."""

from __future__ import annotations

import json
from datetime import timedelta

import sqlalchemy as sa

from app.broker.tokens import issue_token, revoke_token
from app.db.schema import api_tokens, audit_log
from app.retention import purge
from tests.broker.records import add_client
from tests.dashboard import DashboardFactory
from tests.waiting import eventually


async def test_the_purge_job_deletes_old_audit_records_and_dead_tokens_as_the_clock_moves(
    dashboard_factory: DashboardFactory,
) -> None:
    dashboard = await dashboard_factory(audit={"retention_days": 30, "purge_interval": 3600})
    services, clock = dashboard.services, dashboard.clock
    db = services.db
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
        return [found for found in (json.loads(row.details_json) for row in rows) if found["audit_records"]]

    details = (await eventually(purged, "the purge job's record of the audit records it deleted"))[-1]
    assert details["audit_records"] >= today and details["retention_days"] == 30  # type: ignore[operator]
    cutoff = clock.now() - timedelta(days=30)
    remaining = await db.fetch_all(sa.select(audit_log.c.action, audit_log.c.at))
    assert [row.action for row in remaining if row.at < cutoff and row.action != "audit_purged"] == []
    assert "later_record" in {row.action for row in remaining}
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
