"""Upgrades keep data: a database of every released schema revision, filled with the rows of an
installation in use (tests/upgrades/data), migrates to the current schema with nothing lost,
on SQLite and on MariaDB (the suite's two passes); and a dashboard serves a database upgraded
from the oldest one.

Every migration needs its fixture; the first test below says how to write it.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from app import db as database
from tests.dashboard import make_settings, start_dashboard
from tests.upgrades import fixtures
from tests.upgrades.fixtures import Fixture, install, read_rows

MIGRATIONS = fixtures.migrations()
WITH_FIXTURE = [m.revision for m in MIGRATIONS if fixtures.fixture_path(m.revision).exists()]
OLDEST = MIGRATIONS[0].revision
# The fixture's administrator (its password hash is in data/0001.json).
ADMIN_PASSWORD = "upgrade-admin-password"

# A later migration that changes or drops stored values on purpose says so here, with why:
# (table, column) -> reason; column "*" for a dropped table. Anything else must come through as it was.
CHANGED_BY_MIGRATIONS: dict[tuple[str, str], str] = {}


def test_every_migration_has_an_upgrade_fixture() -> None:
    missing = [m for m in MIGRATIONS if not fixtures.fixture_path(m.revision).exists()]
    advice = [
        f"Migration {m.revision} ({m.relative_path}) has no upgrade fixture. Write it with\n"
        f"    .venv/bin/python -m tests.upgrades write {m.revision}\n"
        f"which migrates the fixture of {m.down_revision} to {m.revision}, adds sample rows to new tables "
        f"and sample values to new optional columns, and writes tests/upgrades/data/{m.revision}.json; "
        "make its samples look like what an installation would hold, then commit it with the migration."
        for m in missing
    ]
    assert not missing, "\n".join(advice)
    known = {m.revision for m in MIGRATIONS}
    stray = sorted(p.name for p in fixtures.DATA.glob("*.json") if p.stem not in known)
    assert not stray, f"upgrade fixtures without a migration: {stray} (remove them with their migration)"


@pytest.mark.parametrize("revision", WITH_FIXTURE)
def test_each_fixture_represents_its_schema(revision: str, tmp_path: Path) -> None:
    """Every table has rows and every optional column is set somewhere: an upgrade of empty
    columns would prove nothing about them."""
    url = f"sqlite:///{tmp_path / 'fixture.sqlite3'}"
    fixture = fixtures.load(revision)
    install(url, fixture)
    left = fixtures.gaps(url, fixture)
    assert not left, (
        f"tests/upgrades/data/{revision}.json does not represent schema {revision}: {'; '.join(left)}. "
        "Add rows or values there."
    )


def comparable(value: Any) -> Any:
    """One form for a value whatever the backend returns (MariaDB's booleans are integers)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, datetime):
        return value.replace(microsecond=0)
    return value


def lost_or_changed(fixture: Fixture, upgraded: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Every fixture row must be in the upgraded database once, with the values it had."""
    problems: list[str] = []
    for table, rows in fixture.tables.items():
        if (table, "*") in CHANGED_BY_MIGRATIONS:
            continue
        if table not in upgraded:
            problems.append(f"table {table} is gone")
            continue
        after = upgraded[table]
        if len(after) != len(rows):
            problems.append(f"{table}: {len(rows)} rows before, {len(after)} after")
        key_columns: list[str] = [c for c in ("id", "key") if rows and c in rows[0]]
        if not key_columns and rows:
            key_columns = list(rows[0])
        index = {tuple(comparable(r.get(c)) for c in key_columns): r for r in after}
        for row in rows:
            key = tuple(comparable(row[c]) for c in key_columns)
            found = index.get(key)
            if found is None:
                problems.append(f"{table} row {dict(zip(key_columns, key, strict=True))} is gone")
                continue
            for column, value in row.items():
                if (table, column) in CHANGED_BY_MIGRATIONS:
                    continue
                if column not in found:
                    problems.append(f"column {table}.{column} is gone")
                elif comparable(found[column]) != comparable(value):
                    problems.append(f"{table} {key}: {column} was {value!r}, is {found[column]!r}")
    return sorted(set(problems))


@pytest.mark.parametrize("revision", WITH_FIXTURE)
def test_a_database_of_each_revision_upgrades_to_the_current_schema_with_nothing_lost(
    revision: str, database_url: str
) -> None:
    fixture = fixtures.load(revision)
    install(database_url, fixture)
    assert database.current_revision(database_url) == revision
    database.upgrade(database_url)
    assert database.current_revision(database_url) == database.head_revision()
    problems = lost_or_changed(fixture, read_rows(database_url))
    assert not problems, (
        f"upgrading from {revision} lost or changed data: {'; '.join(problems)}. "
        "If a migration changes these on purpose, name them in CHANGED_BY_MIGRATIONS with the reason."
    )


async def test_a_dashboard_serves_a_database_upgraded_from_the_oldest_schema(
    database_url: str, tmp_path: Path
) -> None:
    fixture = fixtures.load(OLDEST)
    install(database_url, fixture)
    dashboard = await start_dashboard(make_settings(tmp_path / "var", database_url), admin_password=None)
    try:
        dashboard.admin_password = ADMIN_PASSWORD
        admin = await dashboard.admin()
        listed = (await admin.get("/api/v1/admin/vms")).json()["vms"]
        # (and the demo hypervisor's own domain, found there and adopted as unclassified)
        assert {vm["name"] for vm in fixture.tables["vms"]} <= {vm["name"] for vm in listed}
        # The copy that was running when the old dashboard stopped is reported honestly.
        operation = (await admin.get("/api/v1/admin/operations/3")).json()["operation"]
        assert operation["state"] == "interrupted" and "part-op3" in operation["message"]
        pools = await admin.get("/pools")
        assert pools.status_code == 200
        assert all(pool["name"] in pools.text for pool in fixture.tables["pools"])
        entries = await dashboard.services.audit.recent(limit=500)
        assert any(entry["details"].get("note") == "ąčęėįšųūž ✓" for entry in entries)
    finally:
        await dashboard.stop()


def test_the_comparison_notices_a_lost_row_a_changed_value_and_a_duplicate() -> None:
    """The check above is not blind."""
    fixture = fixtures.load(OLDEST)
    upgraded = {table: [dict(row) for row in rows] for table, rows in fixture.tables.items()}
    assert lost_or_changed(fixture, upgraded) == []
    upgraded["leases"].pop()
    upgraded["vms"][0]["memory_mib"] = 1
    upgraded["audit_log"].append(dict(upgraded["audit_log"][0], id=999))
    upgraded["pool_vms"][0]["vm_id"] = 6
    problems = lost_or_changed(fixture, upgraded)
    assert any(p.startswith("leases row {'id': 3} is gone") for p in problems), problems
    assert any("memory_mib was 8192, is 1" in p for p in problems), problems
    assert "audit_log: 5 rows before, 6 after" in problems
    assert any(p.startswith("pool_vms row") for p in problems), problems
