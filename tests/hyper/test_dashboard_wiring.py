"""The running dashboard owns a hypervisor registry: built in the lifespan with the
dashboard's SSH identity, connected at start, stopped at shutdown."""

from __future__ import annotations

import asyncio
from pathlib import Path

from app import db as database
from app.db.schema import hypervisors
from tests.dashboard import make_settings, start_dashboard
from tests.hyper.conftest import row_values, ssh_record
from tests.services.libvirt_host import LibvirtHost


async def test_the_dashboard_connects_to_configured_hypervisors_at_start(
    database_url: str, h0: LibvirtHost, tmp_path: Path
) -> None:
    # The dashboard's key pair is created in its data dir at first start: start once to
    # learn it (as an admin would), authorize it on the hypervisor, then add the hypervisor.
    first = await start_dashboard(make_settings(tmp_path / "var", database_url))
    key = first.services.hypervisors.key
    assert key.private_path == tmp_path / "var" / "ssh" / "id_ed25519"
    assert oct(key.private_path.stat().st_mode & 0o777) == "0o600"
    await first.stop()
    h0.authorize(key.public_line)

    await asyncio.to_thread(database.upgrade, database_url)
    db = database.connect_database(database_url)
    await db.connect()
    try:
        await db.execute(hypervisors.insert().values(**row_values(ssh_record(h0, name="rack-1"))))
    finally:
        await db.disconnect()

    running = await start_dashboard(make_settings(tmp_path / "var", database_url), admin_password=None)
    try:
        registry = running.services.hypervisors
        assert registry.key == key, "the key pair is kept across restarts"
        hv = registry.get(1)
        assert (hv.name, hv.state) == ("rack-1", "up")
        assert (await hv.run(["id", "-un"])).stdout.strip() == h0.ssh_user
        assert f"[{h0.ssh_address}]:{h0.ssh_port}" in registry.known_hosts.path.read_text()
    finally:
        await running.stop()
    assert not hv.connected, "stopping the dashboard closes its hypervisor connections"
