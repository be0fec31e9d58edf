"""Fixtures of the broker tests: real directory servers (slapd) shared per session, and
desktops on the harness hypervisors (the VM tests' world fixtures, reused)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from databases import Database

from app import db as database
from tests.broker.desktop_lab import LAB_SETTINGS, DesktopLab, iso_dirs_kept
from tests.broker.directory_servers import DirectoryServer, start_directory
from tests.services.libvirt_host import LibvirtHost
from tests.vms import conftest as vm_fixtures
from tests.vms.world import WorldFactory


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


# Desktops on the real hypervisors: the VM tests' dashboard with h0 (and h1) registered over SSH.
world_factory = vm_fixtures.world_factory


@pytest.fixture
async def lab(world_factory: WorldFactory, hypervisor_host: LibvirtHost) -> AsyncIterator[DesktopLab]:
    """Desktops on h0: a dashboard managing it over SSH (pinned host key); the API as clients use it."""
    with iso_dirs_kept([hypervisor_host]):
        lab = DesktopLab(await world_factory([hypervisor_host], **LAB_SETTINGS))
        yield lab
        await lab.aclose()


@pytest.fixture
async def lab2(
    world_factory: WorldFactory, hypervisor_host: LibvirtHost, second_hypervisor: LibvirtHost
) -> AsyncIterator[DesktopLab]:
    """Like ``lab``, with h1 (its own network namespace, libvirtd and sshd) registered too."""
    with iso_dirs_kept([hypervisor_host, second_hypervisor]):
        lab = DesktopLab(await world_factory([hypervisor_host, second_hypervisor], **LAB_SETTINGS))
        yield lab
        await lab.aclose()
