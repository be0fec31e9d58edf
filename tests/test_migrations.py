"""Migrations: an empty database upgrades to the latest revision, and the result is exactly
the data model in ``app/db/schema.py`` (alembic's autogenerate comparison finds nothing)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app import db as database
from app.db.schema import metadata
from tests.services.mariadb import MariaDB


def _differences(url: str) -> list[object]:
    engine = sa.create_engine(database.sync_url(url), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def test_an_empty_database_upgrades_to_the_latest_revision(database_url_any: str) -> None:
    assert database.current_revision(database_url_any) is None
    database.upgrade(database_url_any)
    assert database.current_revision(database_url_any) == database.head_revision()
    # Running it again is a no-op, as at every dashboard start.
    database.upgrade(database_url_any)
    assert database.current_revision(database_url_any) == database.head_revision()


def test_the_migrated_schema_is_the_data_model(database_url_any: str) -> None:
    database.upgrade(database_url_any)
    assert _differences(database_url_any) == []


def test_the_comparison_notices_a_difference(database_url_any: str) -> None:
    """The check above is not blind: a column the model lacks shows up."""
    database.upgrade(database_url_any)
    engine = sa.create_engine(database.sync_url(database_url_any), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("ALTER TABLE pools ADD COLUMN stray INTEGER"))
    finally:
        engine.dispose()
    differences = _differences(database_url_any)
    assert any("stray" in repr(diff) for diff in differences), differences


def test_downgrade_removes_everything(database_url_any: str) -> None:
    database.upgrade(database_url_any)
    engine = sa.create_engine(database.sync_url(database_url_any), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as connection:
            cfg = database._alembic_config()
            cfg.attributes["connection"] = connection
            command.downgrade(cfg, "base")
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert tables <= {"alembic_version"}


def test_a_migration_waits_a_bounded_time_for_a_table_in_use_on_mariadb(mariadb: MariaDB) -> None:
    """A session that keeps a table the next migration changes in use (an open transaction): the
    migration gives up after its wait, and lets go of the migration lock, instead of waiting for a
    day with every query of that table queued behind it. Once the session ends, it goes through."""
    mariadb.reset()
    url = mariadb.url
    database.upgrade(url, "0014")
    engine = sa.create_engine(database.sync_url(url), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as reader:
            reader.execute(sa.text("SELECT * FROM api_tokens"))  # its open transaction holds the table
            with pytest.raises(database.MigrationBusy, match="in use"):
                database.upgrade(url, "0015", table_lock_wait=1)
            free = sa.text("SELECT IS_FREE_LOCK(:name)")
            assert reader.execute(free, {"name": database.MIGRATION_LOCK}).scalar() == 1
        database.upgrade(url, "0015", table_lock_wait=1)
    finally:
        engine.dispose()
    assert database.current_revision(url) == "0015"
