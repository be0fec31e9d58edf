"""Fixtures for the hypervisor layer: the dashboard's SSH identity trusted by the test
hypervisors, hypervisor records pointing at them, and registries on a real database."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from databases import Database

from app import db as database
from app.audit import AuditLog
from app.db.schema import hypervisors as hypervisors_table
from app.hyper import ConnectionEvent, DomainEvent, HypervisorRecord, HypervisorRegistry
from app.hyper.session import Session, open_session
from app.hyper.spice_tls import SpiceTls
from app.hyper.sshkeys import DashboardKey, KnownHostsFile, ensure_dashboard_key
from app.live.hub import LiveHub, Subscription
from app.settings import Settings
from app.tlsca import DashboardCA
from tests.services.libvirt_host import LibvirtHost
from tests.services.rundir import RunDir
from tests.waiting import eventually

REPO = Path(__file__).resolve().parent.parent.parent

# Quick enough that fencing and recovery happen within a test, slow enough to be realistic.
FAST_WATCH = {
    "connect_timeout": 5.0,
    "health_interval": 1.0,
    "health_timeout": 4.0,
    "fence_after": 3.0,
    "reconnect_initial": 0.5,
    "reconnect_max": 2.0,
    "keepalive_interval": 2,
    "keepalive_count": 2,
    "startup_wait": 15.0,
}


@pytest.fixture(scope="session")
def dashboard_key(run_dir: RunDir) -> DashboardKey:
    """The dashboard's own key pair (as the lifespan creates it), in the run dir."""
    return ensure_dashboard_key(run_dir.sub("dashboard-ssh", mode=0o700))


def prepare_host(host: LibvirtHost, key: DashboardKey) -> LibvirtHost:
    """Trust the dashboard's key and give the host an ISO directory, as install.sh would."""
    host.authorize(key.public_line)
    iso = host.dir / "iso"
    if not iso.exists():
        iso.mkdir()
        shutil.chown(iso, host.ssh_user, "libvirt")
        iso.chmod(0o775)
    return host


@pytest.fixture(scope="session")
def h0(hypervisor_host: LibvirtHost, dashboard_key: DashboardKey) -> LibvirtHost:
    return prepare_host(hypervisor_host, dashboard_key)


@pytest.fixture(scope="session")
def h1(second_hypervisor: LibvirtHost, dashboard_key: DashboardKey) -> LibvirtHost:
    return prepare_host(second_hypervisor, dashboard_key)


def ssh_record(host: LibvirtHost, *, name: str | None = None, **overrides: Any) -> HypervisorRecord:
    """A confirmed ``ssh`` hypervisor record for a test host."""
    values: dict[str, Any] = {
        "id": 0,  # assigned by the database
        "name": name or host.name,
        "transport": "ssh",
        "address": host.ssh_address,
        "ssh_port": host.ssh_port,
        "ssh_user": host.ssh_user,
        "images_dir": str(host.images_dir),
        "volatile_dir": str(host.volatile_dir),
        "iso_dir": str(host.dir / "iso"),
        "host_key": host.host_key_line(),
        "host_key_confirmed": True,
    }
    values.update(overrides)
    return HypervisorRecord(**values)


def row_values(record: HypervisorRecord) -> dict[str, Any]:
    """Column values of a record (without id) for inserting into ``hypervisors``; unset ones: defaults."""
    values = {name: getattr(record, name) for name in record.__dataclass_fields__ if name != "id"}
    return {name: value for name, value in values.items() if value is not None}


@pytest.fixture
async def h0_session(h0: LibvirtHost, dashboard_key: DashboardKey, tmp_path: Path) -> AsyncIterator[Session]:
    """A live connection to h0 (libvirt over pinned qemu+ssh, commands over asyncssh)."""
    record = ssh_record(h0)
    known_hosts = KnownHostsFile(tmp_path / "ssh")
    entry = record.known_hosts_entry()
    assert entry is not None
    known_hosts.write([entry])
    session = await open_session(record, dashboard_key, known_hosts)
    yield session
    await session.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    await asyncio.to_thread(database.upgrade, database_url)
    connection = database.connect_database(database_url)
    await connection.connect()
    yield connection
    await connection.disconnect()


@dataclass
class RegistryHarness:
    """A registry on a real database, with what it published, audited and told listeners."""

    registry: HypervisorRegistry
    db: Database
    hub: LiveHub
    audit: AuditLog
    live: Subscription
    domain_events: list[DomainEvent] = field(default_factory=list)
    connection_events: list[ConnectionEvent] = field(default_factory=list)

    def published(self, topic: str = "hypervisor") -> list[dict[str, Any]]:
        """Messages published on ``topic`` since the last call."""
        found = []
        while not self.live.queue.empty():
            event = self.live.queue.get_nowait()
            if event.topic == topic:
                found.append(event.data)
        return found

    async def wait_for_domain_event(self, name: str, event: str, timeout: float = 30) -> DomainEvent:
        def seen() -> DomainEvent | None:
            return next((e for e in self.domain_events if e.name == name and e.event == event), None)

        return await eventually(seen, f"the {event} event of {name}", timeout=timeout)

    async def add(self, record: HypervisorRecord) -> int:
        """Insert the record as a new row; returns its id (start or reload picks it up)."""
        return int(await self.db.execute(hypervisors_table.insert().values(**row_values(record))))

    async def row(self, hypervisor_id: int) -> dict[str, Any]:
        found = await self.db.fetch_one(
            sa.select(hypervisors_table).where(hypervisors_table.c.id == hypervisor_id)
        )
        assert found is not None
        return dict(found._mapping)

    async def update(self, hypervisor_id: int, **values: Any) -> None:
        await self.db.execute(
            sa.update(hypervisors_table).where(hypervisors_table.c.id == hypervisor_id).values(**values)
        )


RegistryFactory = Callable[..., Awaitable[RegistryHarness]]


@pytest.fixture
async def registry_factory(
    db: Database, tmp_path: Path, database_url: str, dashboard_key: DashboardKey
) -> AsyncIterator[RegistryFactory]:
    """Build and start registries: ``await registry_factory(records=[...], **hypervisor_settings)``."""
    started: list[RegistryHarness] = []

    async def factory(
        records: Sequence[HypervisorRecord] = (), *, key: DashboardKey | None = None, **watch: Any
    ) -> RegistryHarness:
        settings = Settings.model_validate(
            {
                "database_url": database_url,
                "data_dir": tmp_path / f"var{len(started)}",
                "hypervisors": {**FAST_WATCH, **watch},
            }
        )
        hub = LiveHub()
        audit = AuditLog(db)
        registry = HypervisorRegistry(
            db=db,
            hub=hub,
            audit=audit,
            settings=settings,
            key=key or dashboard_key,
            known_hosts=KnownHostsFile(settings.data_dir / "ssh"),
            spice_tls=SpiceTls(DashboardCA.load_or_create(settings.ca_dir())),
        )
        harness = RegistryHarness(registry, db, hub, audit, hub.subscribe(is_admin=True))
        registry.add_domain_listener(harness.domain_events.append)
        registry.add_connection_listener(harness.connection_events.append)
        for record in records:
            await harness.add(record)
        started.append(harness)
        await registry.start()
        return harness

    yield factory
    for harness in reversed(started):
        await harness.registry.stop()
