"""Database access: URL handling, migrations (alembic) and the async connection (databases).

Users write one URL, ``sqlite:///var/kvmvdi.sqlite3`` or
``mysql://vdi:PASSWORD@127.0.0.1:3306/vdi``; the async driver (aiosqlite / aiomysql)
serves the app and the sync driver (sqlite3 / PyMySQL) serves alembic.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from databases import Database
from sqlalchemy.engine import make_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class DatabaseURLError(ValueError):
    pass


def _split(url: str) -> tuple[str, sa.engine.URL]:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "mysql", "mariadb"):
        raise DatabaseURLError(f"unsupported database {backend!r}: use sqlite:/// or mysql://")
    return ("sqlite" if backend == "sqlite" else "mysql"), parsed


def backend_name(url: str) -> str:
    """``"sqlite"`` or ``"mysql"`` (MariaDB)."""
    return _split(url)[0]


def async_url(url: str) -> str:
    backend, parsed = _split(url)
    driver = "sqlite+aiosqlite" if backend == "sqlite" else "mysql+aiomysql"
    if backend == "mysql" and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def sync_url(url: str) -> str:
    backend, parsed = _split(url)
    driver = "sqlite" if backend == "sqlite" else "mysql+pymysql"
    if backend == "mysql" and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def safe_url(url: str) -> str:
    """The URL with its password masked, for logs and ``kvm-vdi check``."""
    return make_url(url).render_as_string(hide_password=True)


def _ensure_sqlite_dir(url: str) -> None:
    backend, parsed = _split(url)
    if backend == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (blocking; run it in a thread from async code)."""
    _ensure_sqlite_dir(url)
    engine = sa.create_engine(sync_url(url), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as connection:
            cfg = _alembic_config()
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = sa.create_engine(sync_url(url), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


class _Database(Database):
    # SQLite through a pool of WAL connections with one writer at a time (app/db/sqlite.py).
    SUPPORTED_BACKENDS = {**Database.SUPPORTED_BACKENDS, "sqlite": "app.db.sqlite:SQLiteBackend"}


def connect_database(url: str) -> Database:
    """An unconnected ``databases.Database``; call ``await db.connect()`` in the lifespan."""
    _ensure_sqlite_dir(url)
    if backend_name(url) == "mysql":
        return _Database(async_url(url), minsize=1, maxsize=20, pool_recycle=3600)
    return _Database(async_url(url))
