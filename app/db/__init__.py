"""Database access: URL handling, migrations (alembic) and the async connection (databases).

Users write one URL, ``sqlite:///var/kvmvdi.sqlite3`` or
``mysql://vdi:PASSWORD@127.0.0.1:3306/vdi``; the async driver (aiosqlite / aiomysql)
serves the app and the sync driver (sqlite3 / PyMySQL) serves alembic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from databases import Database
from databases.core import Connection, Transaction
from sqlalchemy.engine import make_url

from app.db.ending import EndingConnection, EndingTransaction
from app.db.guarded import GuardedBackend
from app.db.health import DatabaseHealth

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class DatabaseURLError(ValueError):
    pass


class MigrationBusy(RuntimeError):
    """Another dashboard holds the migration lock, or a table to change stays in use, longer than we wait."""


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


# Replicas starting together must not migrate together: on MariaDB they queue on a named
# lock (per server; the documented cluster set-up sends every replica to the same Galera node).
MIGRATION_LOCK = "kvmvdi_migrations"
MIGRATION_LOCK_WAIT = 300
# Seconds a migration's change of a table waits for the sessions using that table (an open
# transaction, a backup) before it gives up. MariaDB would wait a day, holding the migration lock
# meanwhile, and every query of that table queues behind the waiting change.
TABLE_LOCK_WAIT = 60
LOCK_WAIT_TIMEOUT = 1205


def upgrade(url: str, revision: str = "head", *, table_lock_wait: int = TABLE_LOCK_WAIT) -> None:
    """Apply migrations up to ``revision`` (blocking; run it in a thread from async code)."""
    _ensure_sqlite_dir(url)
    engine = sa.create_engine(sync_url(url), poolclass=sa.pool.NullPool)
    mysql = backend_name(url) == "mysql"
    try:
        with engine.connect() as locking:
            if mysql:
                got = locking.execute(
                    sa.text("SELECT GET_LOCK(:name, :wait)"),
                    {"name": MIGRATION_LOCK, "wait": MIGRATION_LOCK_WAIT},
                ).scalar()
                if got != 1:
                    raise MigrationBusy("another dashboard has been migrating the database for too long")
            try:
                with engine.begin() as connection:
                    if mysql:
                        connection.execute(sa.text(f"SET SESSION lock_wait_timeout = {int(table_lock_wait)}"))
                    cfg = _alembic_config()
                    cfg.attributes["connection"] = connection
                    command.upgrade(cfg, revision)
            except sa.exc.OperationalError as exc:
                if mysql and exc.orig is not None and exc.orig.args[:1] == (LOCK_WAIT_TIMEOUT,):
                    raise MigrationBusy(
                        f"a table the migration changes has been in use for over {table_lock_wait} s "
                        "(a long transaction or a backup?): migrate again once it ends"
                    ) from exc
                raise
            finally:
                if mysql:
                    locking.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": MIGRATION_LOCK})
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


def known_revisions() -> list[str]:
    """Every revision the migrations of this code know."""
    from alembic.script import ScriptDirectory

    return [script.revision for script in ScriptDirectory.from_config(_alembic_config()).walk_revisions()]


class AppDatabase(Database):
    """``databases.Database`` with every call bounded in time and outages noticed (``health``).

    SQLite goes through a pool of WAL connections with one writer at a time
    (app/db/sqlite.py); every backend's connections are guarded (app/db/guarded.py) and
    given back to the pool however their transaction ends (app/db/ending.py).
    """

    SUPPORTED_BACKENDS = {**Database.SUPPORTED_BACKENDS, "sqlite": "app.db.sqlite:SQLiteBackend"}

    def __init__(self, url: str, *, call_timeout: float, **options: Any) -> None:
        super().__init__(url, **options)
        self.health = DatabaseHealth()
        self._backend = GuardedBackend(self._backend, self.health, call_timeout)

    def connection(self) -> Connection:
        if self._global_connection is not None:
            return self._global_connection
        connection: Connection | None = self._connection_map.get(self._current_task)
        if connection is None:
            connection = self._connection_map[self._current_task] = EndingConnection(self, self._backend)
        return connection

    def transaction(self, *, force_rollback: bool = False, **kwargs: Any) -> Transaction:
        return EndingTransaction(self.connection, force_rollback=force_rollback, **kwargs)

    async def probe(self) -> None:
        """A round trip that can write (on SQLite it takes the write lock): raises while unavailable."""
        async with self.transaction():
            await self.fetch_val("SELECT 1")


# Galera: a read waits until the node has applied what the cluster committed before it, so
# a replica reads what another replica wrote through another node (a console ticket it issued).
CAUSAL_READS = "SET SESSION wsrep_sync_wait = 1"


def connect_database(
    url: str, *, timeout: float = 10.0, pool_size: int | None = None, causal_reads: bool = False
) -> AppDatabase:
    """An unconnected database; call ``await db.connect()`` in the lifespan.

    No call waits longer than ``timeout`` seconds for the database, and ``disconnect`` waits as
    long for the connections still in use before it closes them. ``pool_size`` connections at
    most (20 on MariaDB, 16 on SQLite unless given). ``causal_reads`` (several replicas on
    MariaDB Galera): every connection reads its cluster's latest commits (``wsrep_sync_wait``;
    a no-op on a MariaDB without Galera).
    """
    _ensure_sqlite_dir(url)
    if backend_name(url) == "mysql":
        options: dict[str, Any] = {"init_command": CAUSAL_READS} if causal_reads else {}
        return AppDatabase(
            async_url(url),
            call_timeout=timeout,
            minsize=1,
            maxsize=pool_size or 20,
            pool_recycle=3600,
            connect_timeout=max(1, round(timeout / 2)),
            **options,
        )
    # SQLite's own busy timeout answers "locked" a little before the guard gives up.
    sized = {} if pool_size is None else {"pool_size": pool_size}
    return AppDatabase(async_url(url), call_timeout=timeout, busy_timeout=timeout * 0.8, **sized)
