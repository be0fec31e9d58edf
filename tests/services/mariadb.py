"""A private MariaDB server: its own data dir, socket and loopback port.

``mariadb-install-db`` then ``mariadbd`` as user mysql, with durability settings
relaxed for speed (a test database never needs to survive a power cut).
Database ``vdi`` and user ``vdi`` (random password, from 127.0.0.1 and localhost)
are created at start; :meth:`MariaDB.reset` drops and recreates the database for a
test that needs an empty schema (grants are kept: they are stored per database name).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from . import cache, report
from .ports import allocate_port, release_port
from .process import ServiceError, log_tail, run, spawn, stop_process, wait_until
from .rundir import RunDir

DATABASE = "vdi"
USER = "vdi"
# Seconds a reset waits for sessions of earlier tests to end and let go of their locks.
RESET_LOCK_WAIT = 20
# The named lock dashboards take while they migrate the database (app/db).
MIGRATION_LOCK = "kvmvdi_migrations"


def server_version() -> str:
    out = run(["mariadbd", "--version"]).stdout
    match = re.search(r"Ver\s+(\S+)", out)
    return match.group(1) if match else out.strip()


def install_data_dir(config_path: Path, data: Path, install_log: Path) -> None:
    """A pristine data dir (``mariadb-install-db``: root by unix socket, no test database)."""
    with open(install_log, "wb") as log:
        rc = subprocess.run(
            [
                "mariadb-install-db",
                f"--defaults-file={config_path}",
                "--user=mysql",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
                "--skip-name-resolve",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=False,
        ).returncode
    if rc != 0:
        raise ServiceError(f"mariadb-install-db failed ({rc})\n{log_tail(install_log)}")


class MariaDB:
    def __init__(self, run_dir: RunDir, name: str = "mariadb") -> None:
        self.run_dir = run_dir
        self.name = name
        self.dir: Path = run_dir.path / name
        self.host = "127.0.0.1"
        self.port: int = 0
        self.database = DATABASE
        self.user = USER
        self.password = secrets.token_urlsafe(12)
        self.version = ""
        self.socket_path: Path = self.dir / "run" / "mysqld.sock"
        self.config_path: Path = self.dir / "my.cnf"
        self.log_path: Path = self.dir / "run" / "error.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``mysql://vdi:PW@127.0.0.1:PORT/vdi``: the form the app's settings accept."""
        return f"mysql://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    def start(self) -> MariaDB:
        started = time.monotonic()
        self.port = allocate_port(self.host)
        run_sub = self.run_dir.sub(self.name, "run")
        data = self.dir / "data"
        shutil.chown(run_sub, "mysql", "mysql")
        self.config_path.write_text(
            "\n".join(
                [
                    "[mariadbd]",
                    f"datadir={data}",
                    f"socket={self.socket_path}",
                    f"port={self.port}",
                    f"bind-address={self.host}",
                    f"pid-file={run_sub / 'mariadbd.pid'}",
                    f"log-error={self.log_path}",
                    "skip-name-resolve",
                    "skip-log-bin",
                    "character-set-server=utf8mb4",
                    "collation-server=utf8mb4_unicode_ci",
                    "innodb_buffer_pool_size=64M",
                    "innodb_log_file_size=16M",
                    # tests do not need crash safety; fsync per commit would dominate their run time
                    "innodb_flush_log_at_trx_commit=0",
                    "innodb_doublewrite=0",
                    "sync_binlog=0",
                    "max_connections=300",
                    "[client]",
                    f"socket={self.socket_path}",
                    "",
                ]
            )
        )
        # A pristine data dir takes seconds to make (mostly fsync); copying one takes ~0.2 s.
        template = cache.entry("mariadb-datadir", server_version())
        if not cache.restore(template, data):
            install_data_dir(self.config_path, data, self.dir / "install-db.log")
            cache.store(data, template)
        self._spawn()
        self._sql(
            f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4;"
            + "".join(
                f"CREATE USER '{USER}'@'{h}' IDENTIFIED BY '{self.password}';"
                f"GRANT ALL ON {DATABASE}.* TO '{USER}'@'{h}';"
                for h in ("127.0.0.1", "localhost")
            )
        )
        self.version = self._sql("SELECT VERSION()").strip()
        short = ".".join(self.version.split(".")[:2])
        report.note(
            "mariadb", f"started mariadbd {short} on {self.host}:{self.port}", time.monotonic() - started
        )
        return self

    def _spawn(self) -> None:
        self._proc = spawn(
            ["mariadbd", f"--defaults-file={self.config_path}", "--user=mysql"],
            run_id=self.run_dir.id,
            log_path=self.dir / "mariadbd.out",
        )
        wait_until(self._answers, what="mariadbd", timeout=60, log_path=self.log_path, proc=self._proc)

    def stop_server(self) -> None:
        """An outage: the server stops (cleanly), keeping data, port and users for :meth:`start_server`."""
        if self._proc is not None:
            stop_process(self._proc, timeout=30)
            self._proc = None

    def start_server(self) -> None:
        """The server back after :meth:`stop_server`, on the same port with the same data."""
        if self._proc is None:
            self._spawn()

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The server hangs for the block (SIGSTOP): connections open, nothing answers."""
        assert self._proc is not None, "the server is not running"
        os.kill(self._proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self._proc.pid, signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self._proc is not None

    def _answers(self) -> bool:
        with socket.create_connection((self.host, self.port), timeout=1):
            pass
        return (
            subprocess.run(
                ["mariadb-admin", f"--defaults-file={self.config_path}", "-u", "root", "ping"],
                capture_output=True,
                timeout=10,
                check=False,
            ).returncode
            == 0
        )

    def _sql(self, statements: str) -> str:
        """Run SQL as root over the unix socket (root authenticates by its OS identity)."""
        return run(
            ["mariadb", f"--defaults-file={self.config_path}", "-u", "root", "-N", "-B", "-e", statements],
            timeout=30,
        ).stdout

    def sql(self, statements: str) -> str:
        """Run SQL as the MariaDB root user; returns tab-separated rows without headers."""
        return self._sql(statements)

    def reset(self) -> None:
        """Drop and recreate the ``vdi`` database: an empty schema in a few milliseconds.

        What earlier tests left behind (a dashboard or a pool not closed, a thread still
        migrating) must not make a test wait: an open transaction of theirs holds metadata locks
        the DROP would wait for, and the migration lock held by one of theirs makes the next
        dashboard's start-up wait, each far longer than a test may take (and with the event loop
        blocked here, a session of this process could never end by itself). So when either is
        held, the sessions of user ``vdi`` end first; a lock still held then fails the reset
        within ``RESET_LOCK_WAIT`` seconds, instead of hanging the test."""
        recreate = f"DROP DATABASE IF EXISTS {DATABASE}; CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4;"
        try:
            # One round trip in the usual case, where nothing is held.
            migration_lock = self._sql(
                f"SET SESSION lock_wait_timeout = 1; SELECT COALESCE(IS_USED_LOCK('{MIGRATION_LOCK}'), 0);"
                + recreate
            ).strip()
        except ServiceError:  # a table of the database is in use (lock wait timeout)
            self._end_sessions(USER)
            self._sql(f"SET SESSION lock_wait_timeout = {RESET_LOCK_WAIT};" + recreate)
            return
        if migration_lock != "0":
            self._end_sessions(USER)

    def _sessions(self, user: str) -> set[int]:
        listed = self._sql(f"SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '{user}'")  # noqa: S608
        return {int(session) for session in listed.split()}

    def _end_sessions(self, user: str) -> None:
        ending = self._sessions(user)
        if not ending:
            return
        # --force: a session that ended meanwhile ("unknown thread id") does not stop the others.
        kills = "".join(f"KILL CONNECTION {session};" for session in sorted(ending))
        run(
            ["mariadb", f"--defaults-file={self.config_path}", "-u", "root", "--force", "-e", kills],
            timeout=30,
            check=False,
        )
        # A killed session leaves the list once it has rolled back and let go of its locks.
        wait_until(
            lambda: not ending & self._sessions(user),
            what=f"the sessions of {user} left by earlier tests ending",
            timeout=RESET_LOCK_WAIT,
        )

    def stop(self) -> None:
        if self._proc is not None:
            # SIGTERM is mariadbd's clean shutdown.
            stop_process(self._proc, timeout=30)
            self._proc = None
        if self.port:
            release_port(self.port)

    def __enter__(self) -> MariaDB:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
