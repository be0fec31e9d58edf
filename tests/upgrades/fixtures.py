"""Upgrade fixtures: representative rows of every schema revision, kept as JSON under ``data/``.

``data/<revision>.json`` holds the rows an installation in use has at that revision: every
table filled, every optional column set somewhere, values a real installation would hold.
The upgrade tests load a fixture into a database created at its revision, migrate it to the
current head and check that nothing was lost.

Each new migration gets its fixture from::

    .venv/bin/python -m tests.upgrades write <revision>

which loads the previous revision's fixture, migrates it to ``<revision>``, adds sample rows
to the tables that are still empty and sample values to optional columns that are still
empty, and writes ``data/<revision>.json``. Review what it wrote (make the samples look like
what an installation would hold), then commit it with the migration.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.script import ScriptDirectory

from app import db as database
from app.backup.dump import decode, encode

DATA = Path(__file__).resolve().parent / "data"
REPO = Path(__file__).resolve().parents[2]
VERSION_TABLE = "alembic_version"
SAMPLE_TIME = datetime(2026, 12, 1, 9, 30, 0)


@dataclass(frozen=True)
class Migration:
    revision: str
    down_revision: str | None
    path: Path

    @property
    def relative_path(self) -> str:
        return str(self.path.relative_to(REPO))


@dataclass(frozen=True)
class Fixture:
    revision: str
    about: str
    # table -> rows; values decoded (datetimes are datetimes)
    tables: dict[str, list[dict[str, Any]]]


def migrations() -> list[Migration]:
    """Every migration, oldest first."""
    scripts = ScriptDirectory.from_config(database._alembic_config())
    found = []
    for script in scripts.walk_revisions():
        down = script.down_revision
        if down is not None and not isinstance(down, str):
            raise RuntimeError(f"migration {script.revision} merges {down}: keep one line of migrations")
        found.append(Migration(script.revision, down, Path(script.path)))
    return list(reversed(found))


def fixture_path(revision: str) -> Path:
    return DATA / f"{revision}.json"


def load(revision: str) -> Fixture:
    raw = json.loads(fixture_path(revision).read_text(encoding="utf-8"))
    if raw["revision"] != revision:
        raise ValueError(f"{fixture_path(revision)} says it is revision {raw['revision']}")
    tables = {
        name: [{key: decode(value) for key, value in row.items()} for row in rows]
        for name, rows in raw["tables"].items()
    }
    return Fixture(revision, str(raw.get("about", "")), tables)


def save(fixture: Fixture) -> Path:
    body = {
        "revision": fixture.revision,
        "about": fixture.about,
        "tables": {
            name: [{key: encode(value) for key, value in row.items()} for row in rows]
            for name, rows in sorted(fixture.tables.items())
        },
    }
    path = fixture_path(fixture.revision)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(database.sync_url(url), poolclass=sa.pool.NullPool)


def reflect(url: str) -> sa.MetaData:
    engine = _engine(url)
    try:
        tables = sa.MetaData()
        tables.reflect(engine)
        return tables
    finally:
        engine.dispose()


def install(url: str, fixture: Fixture) -> None:
    """Create the schema at the fixture's revision in the empty database at ``url`` and load its rows."""
    database.upgrade(url, fixture.revision)
    engine = _engine(url)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "mysql":
                connection.exec_driver_sql("SET FOREIGN_KEY_CHECKS=0")
            tables = sa.MetaData()
            tables.reflect(connection)
            unknown = set(fixture.tables) - set(tables.tables)
            if unknown:
                raise ValueError(f"fixture {fixture.revision} has rows of tables its schema lacks: {unknown}")
            for table in tables.sorted_tables:
                rows = fixture.tables.get(table.name)
                if rows:
                    connection.execute(table.insert(), rows)
            if connection.dialect.name == "mysql":
                connection.exec_driver_sql("SET FOREIGN_KEY_CHECKS=1")
    finally:
        engine.dispose()


def read_rows(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table (the version table aside), ordered by primary key."""
    engine = _engine(url)
    try:
        with engine.connect() as connection:
            tables = sa.MetaData()
            tables.reflect(connection)
            found: dict[str, list[dict[str, Any]]] = {}
            for table in tables.sorted_tables:
                if table.name == VERSION_TABLE:
                    continue
                order = list(table.primary_key.columns) or list(table.columns)
                result = connection.execute(sa.select(table).order_by(*order))
                found[table.name] = [dict(row) for row in result.mappings()]
            return found
    finally:
        engine.dispose()


def gaps(url: str, fixture: Fixture) -> list[str]:
    """What the fixture leaves unrepresented at its revision: empty tables, optional columns never set."""
    missing: list[str] = []
    for table in reflect(url).sorted_tables:
        if table.name == VERSION_TABLE:
            continue
        rows = fixture.tables.get(table.name, [])
        if not rows:
            missing.append(f"table {table.name} has no rows")
            continue
        for column in table.columns:
            if column.nullable and all(row.get(column.name) is None for row in rows):
                missing.append(f"column {table.name}.{column.name} is never set")
    return missing


# -- writing a new revision's fixture -----------------------------------------------------------


@contextmanager
def scratch_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="kvmvdi-upgrade-fixture-") as directory:
        yield f"sqlite:///{Path(directory) / 'fixture.sqlite3'}"


def sample_value(column: sa.Column[Any], row_number: int, taken: dict[str, list[Any]]) -> Any:
    """A plausible value of ``column`` for sample row ``row_number`` (0, 1 ...)."""
    for key in column.foreign_keys:
        choices = taken.get(f"{key.column.table.name}.{key.column.name}", [])
        if choices:
            return choices[row_number % len(choices)]
    kind = column.type
    if isinstance(kind, sa.Boolean):
        return row_number % 2 == 0
    if isinstance(kind, sa.DateTime):
        return SAMPLE_TIME + timedelta(minutes=row_number)
    if isinstance(kind, sa.Integer):
        return row_number + 1
    if isinstance(kind, sa.Float | sa.Numeric):
        return 1.5 + row_number
    if isinstance(kind, sa.String | sa.Text):
        text = f"{column.name}-sample-{row_number + 1}"
        length = getattr(kind, "length", None)
        return text[-length:] if length else text
    raise ValueError(f"no sample for column {column.table.name}.{column.name} of type {kind}")


def fill(url: str, rows: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """``rows`` (of the database at ``url``) with sample rows in empty tables and sample values in
    optional columns that no row sets."""
    filled = {name: [dict(row) for row in table_rows] for name, table_rows in rows.items()}
    tables = reflect(url)
    taken: dict[str, list[Any]] = {}
    for table in tables.sorted_tables:
        if table.name == VERSION_TABLE:
            continue
        table_rows = filled.setdefault(table.name, [])
        if not table_rows:
            for number in range(2):
                row = {column.name: sample_value(column, number, taken) for column in table.columns}
                table_rows.append(row)
        for column in table.columns:
            if column.nullable and all(row.get(column.name) is None for row in table_rows):
                table_rows[0][column.name] = sample_value(column, 0, taken)
        for column in table.columns:
            taken[f"{table.name}.{column.name}"] = [row[column.name] for row in table_rows]
    return filled


def write(revision: str) -> Path:
    """Write ``data/<revision>.json``: the previous revision's fixture migrated, gaps filled."""
    by_revision = {migration.revision: migration for migration in migrations()}
    if revision not in by_revision:
        raise SystemExit(f"no migration {revision} (known: {', '.join(by_revision)})")
    previous = by_revision[revision].down_revision
    if previous is None:
        raise SystemExit("the first revision's fixture is written by hand: it is where every row starts")
    if not fixture_path(previous).exists():
        raise SystemExit(f"write the fixture of {previous} first")
    base = load(previous)
    with scratch_database() as url:
        install(url, base)
        database.upgrade(url, revision)
        rows = fill(url, read_rows(url))
        fixture = Fixture(revision, base.about, rows)
        left = gaps(url, fixture)
    if left:
        raise SystemExit("could not fill: " + "; ".join(left))
    return save(fixture)
