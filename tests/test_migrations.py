"""Migrations: an empty database upgrades to the latest revision, and the result is exactly
the data model in ``app/db/schema.py`` (alembic's autogenerate comparison finds nothing)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app import db as database
from app.db.schema import metadata


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
