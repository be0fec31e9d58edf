"""Fixtures of the broker tests: real directory servers (slapd), shared per session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from databases import Database

from app import db as database
from tests.broker.directory_servers import DirectoryServer, start_directory
from tests.services.mariadb import MariaDB
from tests.services.rundir import RunDir


@pytest.fixture(scope="session")
def ldap_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DirectoryServer]:
    """OpenLDAP with memberOf: alice (vdi-users, vdi-staff), bob (vdi-users), carol (none), dave."""
    server = start_directory(Path(tmp_path_factory.mktemp("slapd")), kind="ldap")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ad_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DirectoryServer]:
    """The Active Directory look-alike: AD attributes, SIDs, primary groups, user@domain binds."""
    server = start_directory(Path(tmp_path_factory.mktemp("ad")), kind="ad")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def broker_mariadb() -> Iterator[MariaDB]:
    """A private MariaDB server for the broker tests."""
    run_dir = RunDir()
    server = MariaDB(run_dir).start()
    yield server
    server.stop()
    run_dir.cleanup()


@pytest.fixture(params=["sqlite", "mariadb"])
def broker_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database URL on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'broker.sqlite3'}"
    else:
        server: MariaDB = request.getfixturevalue("broker_mariadb")
        server.reset()
        url = server.url
    database.upgrade(url)
    return url


@pytest.fixture
async def broker_db(broker_database_url: str) -> AsyncIterator[Database]:
    db = database.connect_database(broker_database_url)
    await db.connect()
    yield db
    await db.disconnect()


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The dashboard's database for broker tests (SQLite in the test's own directory)."""
    return f"sqlite:///{tmp_path / 'dashboard.sqlite3'}"
