"""The audit log: typed text cannot forge lines or control a terminal; a guessing flood cannot grow it
without bound."""

from __future__ import annotations

import httpx

from app import db as database
from app.audit import AuditLog
from app.db.schema import audit_log
from app.escaping import escape_controls
from tests.dashboard import DashboardFactory, RunningDashboard
from tests.log_capture import dashboard_logging
from tests.waiting import eventually

FORGED = "mallory\n2026-12-04 10:00:00,000 INFO kvmvdi.audit [-] login actor=admin\x1b[2K\r\u202eevil"


def test_control_and_direction_characters_are_written_as_escapes() -> None:
    assert escape_controls("a\nb\rc\td\x1b[31me\x00f\x7fg\u2028h\u202ei") == (
        "a\\nb\\rc\\td\\x1b[31me\\x00f\\x7fg\\u2028h\\u202ei"
    )
    assert escape_controls("Žemaitė Ülkü 名前") == "Žemaitė Ülkü 名前", "ordinary letters stay"


async def test_a_typed_user_name_cannot_forge_an_audit_row_or_a_log_line(dashboard: RunningDashboard) -> None:
    with dashboard_logging(log_level="INFO") as captured:
        async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as http:
            answer = await http.post("/api/v1/login", json={"username": FORGED, "password": "whatever-pw"})
        assert answer.status_code == 401
        failed = await dashboard.services.audit.recent(action="login_failed")
    assert len(failed) == 1
    actor = failed[0]["actor"]
    assert "\n" not in actor and "\x1b" not in actor and "\u202e" not in actor and "\r" not in actor
    assert actor.startswith("mallory\\n2026-12-04") and "\\x1b[2K\\r\\u202eevil" in actor
    lines = [line for line in captured.getvalue().splitlines() if "login_failed" in line]
    assert len(lines) == 1, captured.getvalue()
    assert "\x1b" not in captured.getvalue() and "\u202e" not in captured.getvalue()
    assert not any(line.startswith("2026-12-04 10:00:00") for line in captured.getvalue().splitlines())


async def test_a_guessing_flood_is_counted_but_written_only_up_to_the_limit(
    dashboard_factory: DashboardFactory,
) -> None:
    dashboard = await dashboard_factory(
        security={"audit_unauthenticated_per_minute": 3, "login_trusted_networks": ["127.0.0.0/8"]}
    )
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=60) as http:
        for index in range(10):
            body = {"username": f"guess{index}", "password": "a-wrong-password"}
            assert (await http.post("/api/v1/login", json=body)).status_code == 401
    audit = dashboard.services.audit
    assert len(await audit.recent(action="login_failed")) == 3
    assert audit.suppressed_total["login_failed"] == 7
    # Authenticated actions are never left out.
    admin = await dashboard.admin()
    assert (await admin.post("/logout")).status_code == 303
    assert len(await audit.recent(action="logout")) == 1

    # At shutdown (or when the minute ends) the count is written as one row.
    url = dashboard.settings.database_url.get_secret_value()
    await dashboard.stop()
    db = database.connect_database(url)
    await db.connect()
    try:
        rows = await db.fetch_all(audit_log.select().where(audit_log.c.action == "audit_suppressed"))
    finally:
        await db.disconnect()
    assert len(rows) == 1 and '"login_failed": 7' in rows[0]["details_json"]


async def test_a_new_window_writes_the_last_windows_count_and_then_writes_again(
    dashboard: RunningDashboard,
) -> None:
    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    audit = AuditLog(dashboard.services.db, unauthenticated_limit=2, unauthenticated_window=60, clock=clock)
    for _ in range(5):
        await audit.record_unauthenticated("console_ticket_refused", client_address="192.0.2.1")
    assert len(await audit.recent(action="console_ticket_refused")) == 2
    clock.now = 61.0
    await audit.record_unauthenticated("console_ticket_refused", client_address="192.0.2.1")
    suppressed = await audit.recent(action="audit_suppressed")
    assert [row["details"]["counts"] for row in suppressed] == [{"console_ticket_refused": 3}]
    assert len(await audit.recent(action="console_ticket_refused")) == 3, "a new window writes again"


async def test_the_count_is_written_when_the_window_ends_even_if_the_flood_stops(
    dashboard: RunningDashboard,
) -> None:
    audit = AuditLog(dashboard.services.db, unauthenticated_limit=1, unauthenticated_window=0.5)
    for _ in range(4):
        await audit.record_unauthenticated("login_failed", actor="x", client_address="192.0.2.1")
    suppressed = await eventually(lambda: audit.recent(action="audit_suppressed"), "the suppression record")
    assert suppressed[0]["details"]["counts"] == {"login_failed": 3}
