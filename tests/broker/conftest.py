"""Fixtures of the broker tests: real directory servers (slapd), shared per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
