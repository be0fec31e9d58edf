"""The audit log through the admin API: filters by actor, action, target and time, keyset
pages newest first, refused to anyone but an administrator."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import httpx

from app.db.schema import audit_log
from tests.client_session import client_user_session
from tests.dashboard import RunningDashboard
from tests.test_admin_tokens import bearer, make_token

T0 = datetime(2026, 11, 30, 8, 0, 0)
# (minutes after T0, actor, action, target)
RECORDS = [
    (0, "alice", "vm_power", "desk-01"),
    (5, "bob", "vm_power", "desk-02"),
    (10, "alice", "pool_updated", "Accounting"),
    (15, "alice", "vm_power", "desk-01"),
    (20, "carol", "login_failed", ""),
    (25, "alice", "vm_power", "desk-02"),
    (30, "bob", "vm_power", "desk-01"),
]


async def _fill(dashboard: RunningDashboard) -> None:
    for minutes, actor, action, target in RECORDS:
        await dashboard.services.db.execute(
            audit_log.insert().values(
                at=T0 + timedelta(minutes=minutes),
                actor=actor,
                action=action,
                target=target,
                client_address="10.0.0.7",
                details_json=json.dumps({"minute": minutes}),
            )
        )


def _minutes(body: dict[str, Any]) -> list[int]:
    return [record["details"]["minute"] for record in body["records"]]


async def test_records_are_filtered_and_paged_newest_first(dashboard: RunningDashboard) -> None:
    await _fill(dashboard)
    secret = await make_token(await dashboard.admin(), "audit reader", read_only="on")
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30, headers=bearer(secret)) as api:

        async def get(**params: Any) -> dict[str, Any]:
            answer = await api.get("/api/v1/admin/audit", params=params)
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

        alice_power = await get(actor="alice", action="vm_power")
        assert _minutes(alice_power) == [25, 15, 0] and alice_power["next_before"] is None
        record = alice_power["records"][0]
        assert record["at"] == "2026-11-30T08:25:00Z" and record["target"] == "desk-02"
        assert _minutes(await get(target="desk-01")) == [30, 15, 0]
        # A time range: since is inclusive, until exclusive; a zone is converted to UTC.
        window = await get(since="2026-11-30T08:05:00Z", until="2026-11-30T10:20:00+02:00", action="vm_power")
        assert _minutes(window) == [15, 5]

        # Keyset pages walk every record once, whatever is written in between.
        seen: list[int] = []
        # (The range leaves out what the test's own log-in and token wrote, at the real time.)
        in_range = {"since": T0.isoformat(), "until": (T0 + timedelta(hours=1)).isoformat()}
        page = await get(limit=3, **in_range)
        seen += _minutes(page)
        await _fill(dashboard)  # newer rows: they do not shift the pages already cut
        while page["next_before"] is not None:
            page = await get(limit=3, before=page["next_before"], **in_range)
            seen += _minutes(page)
        assert seen == [30, 25, 20, 15, 10, 5, 0]


async def test_wrong_filters_and_other_callers_get_the_error_model(dashboard: RunningDashboard) -> None:
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as anonymous:
        refused = await anonymous.get("/api/v1/admin/audit")
        assert refused.status_code == 401 and refused.json()["error"]
    admin = await dashboard.admin()
    wrong = await admin.get("/api/v1/admin/audit", params={"limit": "0", "since": "yesterday"})
    assert wrong.status_code == 400
    assert set(wrong.json()["fields"]) == {"limit", "since"}
    portal = await client_user_session(dashboard, "dora")
    assert (await portal.get("/api/v1/admin/audit")).status_code == 403
