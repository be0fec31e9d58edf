"""A consistent, portable dump of the database, and loading it into an empty one.

Every table (as the database has it, whatever its schema revision) becomes one
JSON-lines file, one row per line; datetimes and bytes are tagged so they come
back as they were. The format does not depend on the backend: a SQLite dump
restores into MariaDB and back.

Consistency: SQLite is first copied with its online backup API (a snapshot that
writers do not disturb) and dumped from the copy; MariaDB is read inside one
``REPEATABLE READ`` transaction started ``WITH CONSISTENT SNAPSHOT``. Rows are
streamed, never all held in memory.

Loading: the schema is created at the dump's revision (alembic), the rows are
inserted table by table in foreign-key order, then the schema is migrated to the
current revision.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, make_url

from app import db as database
from app.i18n import gettext as _

VERSION_TABLE = "alembic_version"
BATCH = 500


class RestoreRefused(Exception):
    """The target database is not empty (and --force was not given)."""


@dataclass(frozen=True)
class DumpInfo:
    backend: str
    revision: str | None
    rows: dict[str, int]


def encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, Decimal):
        return str(value)
    return value


def decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "$datetime" in value:
            return datetime.fromisoformat(value["$datetime"])
        if "$date" in value:
            return date.fromisoformat(value["$date"])
        if "$bytes" in value:
            return base64.b64decode(value["$bytes"])
    return value


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(database.sync_url(url), poolclass=sa.pool.NullPool)


def _revision(connection: Connection, tables: sa.MetaData) -> str | None:
    if VERSION_TABLE not in tables.tables:
        return None
    row = connection.execute(sa.select(tables.tables[VERSION_TABLE].c.version_num)).first()
    return str(row[0]) if row else None


def _write_tables(connection: Connection, directory: Path) -> tuple[dict[str, int], str | None]:
    tables = sa.MetaData()
    tables.reflect(connection)
    counts: dict[str, int] = {}
    for table in tables.sorted_tables:
        if table.name == VERSION_TABLE:
            continue
        count = 0
        order = [column for column in table.primary_key.columns] or list(table.columns)
        result = connection.execution_options(stream_results=True).execute(sa.select(table).order_by(*order))
        with open(directory / f"{table.name}.jsonl", "w", encoding="utf-8") as out:
            for row in result.mappings():
                out.write(json.dumps({key: encode(value) for key, value in row.items()}) + "\n")
                count += 1
        counts[table.name] = count
    return counts, _revision(connection, tables)


@contextmanager
def _sqlite_snapshot(url: str, directory: Path) -> Iterator[str]:
    """A copy of the SQLite database made with the online backup API; its URL."""
    source_path = make_url(database.sync_url(url)).database
    if not source_path or not Path(source_path).exists():
        raise FileNotFoundError(
            _("the SQLite database {source_path} does not exist").format(source_path=source_path)
        )
    copy = directory / "snapshot.sqlite3"
    source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)
    target = sqlite3.connect(copy)
    try:
        with target:
            source.backup(target)
    finally:
        source.close()
        target.close()
    try:
        yield f"sqlite:///{copy}"
    finally:
        copy.unlink(missing_ok=True)


def dump_database(url: str, directory: Path) -> DumpInfo:
    """Write ``<table>.jsonl`` for every table into ``directory``."""
    backend = database.backend_name(url)
    if backend == "sqlite":
        with _sqlite_snapshot(url, directory) as snapshot:
            engine = _engine(snapshot)
            try:
                with engine.connect() as connection:
                    counts, revision = _write_tables(connection, directory)
            finally:
                engine.dispose()
        return DumpInfo(backend, revision, counts)
    engine = _engine(url).execution_options(isolation_level="REPEATABLE READ")
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            counts, revision = _write_tables(connection, directory)
            connection.rollback()
    finally:
        engine.dispose()
    return DumpInfo(backend, revision, counts)


def _foreign_keys(connection: Connection, on: bool) -> None:
    if connection.dialect.name == "mysql":
        connection.exec_driver_sql(f"SET FOREIGN_KEY_CHECKS={1 if on else 0}")


@contextmanager
def _transaction(url: str, *, foreign_keys: bool = True) -> Iterator[tuple[Connection, sa.MetaData]]:
    """One transaction on the database at ``url``, its tables reflected; MariaDB's foreign-key checks off
    inside when asked (rows then load in any order, self-references included)."""
    engine = _engine(url)
    try:
        with engine.begin() as connection:
            if not foreign_keys:
                _foreign_keys(connection, False)
            tables = sa.MetaData()
            tables.reflect(connection)
            yield connection, tables
            if not foreign_keys:
                _foreign_keys(connection, True)
    finally:
        engine.dispose()


def database_rows(url: str) -> dict[str, int]:
    """Rows per table (the schema version table aside) of the database at ``url``."""
    count = sa.select(sa.func.count())
    with _transaction(url) as (connection, tables):
        return {
            table.name: int(connection.execute(count.select_from(table)).scalar() or 0)
            for table in tables.sorted_tables
            if table.name != VERSION_TABLE
        }


def load_database(url: str, directory: Path, info: DumpInfo, *, force: bool) -> None:
    """Load a dump into the database at ``url`` (empty, or emptied with ``force``), then migrate it."""
    present = {name: count for name, count in database_rows(url).items() if count}
    if present and not force:
        raise RestoreRefused(
            _(
                "the database {safe_url} is not empty ({sum} rows in {count} tables): restore into an empty database, or pass --force to replace it"  # noqa: E501
            ).format(safe_url=database.safe_url(url), sum=sum(present.values()), count=len(present))
        )
    with _transaction(url, foreign_keys=False) as (connection, tables):
        tables.drop_all(connection)
    database.upgrade(url, info.revision or "head")
    with _transaction(url, foreign_keys=False) as (connection, tables):
        for table in tables.sorted_tables:
            path = directory / f"{table.name}.jsonl"
            if table.name != VERSION_TABLE and path.exists():
                _load_table(connection, table, path)
    database.upgrade(url, "head")


def _load_table(connection: Connection, table: sa.Table, path: Path) -> None:
    batch: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as rows:
        for line in rows:
            batch.append({key: decode(value) for key, value in json.loads(line).items() if key in table.c})
            if len(batch) >= BATCH:
                connection.execute(table.insert(), batch)
                batch = []
    if batch:
        connection.execute(table.insert(), batch)
