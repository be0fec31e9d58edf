"""Fixtures of the broker tests: real directory servers (slapd), shared per session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from databases import Database

from app import db as database
from tests.broker.directory_servers import DirectoryServer, start_directory


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


@pytest.fixture
async def broker_db(database_url_any: str) -> AsyncIterator[Database]:
    """A migrated, empty database, once on SQLite and once on MariaDB."""
    database.upgrade(database_url_any)
    db = database.connect_database(database_url_any)
    await db.connect()
    yield db
    await db.disconnect()
