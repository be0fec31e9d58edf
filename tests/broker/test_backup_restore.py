"""``kvm-vdi backup`` of a running dashboard with a real hypervisor, ``kvm-vdi restore`` into a fresh
install (empty database, empty data directory), and the restored dashboard reconnecting to the
hypervisor with the pinned keys and handing out a desktop whose SPICE console links. On SQLite and
on MariaDB (the same test in both passes)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.broker.desktop_lab import LAB_SETTINGS, ApiClient, DesktopLab, link_through_gateway
from tests.broker.records import CLIENT_PASSWORD
from tests.cli import cli_env, kvm_vdi
from tests.dashboard import make_settings, start_dashboard

pytestmark = pytest.mark.kvm

PASSPHRASE = "a passphrase for the backup 1"


async def test_a_backup_restored_into_a_fresh_install_reconnects_and_serves_a_console(
    lab: DesktopLab, tmp_path: Path, database_backend: str, request: pytest.FixtureRequest
) -> None:
    world = lab.world
    vm = await lab.desktop_vm("bk")
    user_id, _ = await lab.client("ann")
    pool_id = await lab.pool("bk", [vm], [user_id])
    passphrase_file = tmp_path / "passphrase"
    passphrase_file.write_text(PASSPHRASE + "\n")
    backup = tmp_path / "vdi.backup"
    settings = world.dashboard.settings
    old_url = settings.database_url.get_secret_value()

    # Online: the dashboard keeps running while the backup is taken.
    made = await asyncio.to_thread(
        kvm_vdi, "backup", str(backup), "--passphrase-file", str(passphrase_file),
        env=cli_env(old_url, settings.data_dir),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "backup written to" in made.stdout and "the configuration file" not in made.stdout
    assert b"ssh-ed25519" not in backup.read_bytes() and b"argon2" not in backup.read_bytes()
    await world.dashboard.stop()

    # A fresh install: an empty database, an empty data directory.
    if database_backend == "mariadb":
        server = request.getfixturevalue("mariadb")
        server.reset()
        new_url = server.url
    else:
        new_url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    fresh = tmp_path / "fresh-var"
    restored = await asyncio.to_thread(
        kvm_vdi,
        "restore",
        str(backup),
        "--passphrase-file",
        str(passphrase_file),
        env=cli_env(new_url, fresh),
    )
    assert restored.returncode == 0, restored.stderr
    assert (fresh / "ssh").stat().st_mode & 0o077 == 0
    assert (fresh / "ssh" / "known_hosts").read_text() == (
        settings.data_dir / "ssh" / "known_hosts"
    ).read_text()

    dashboard = await start_dashboard(make_settings(fresh, new_url, **LAB_SETTINGS), admin_password=None)
    try:
        # The same key and the same pinned host key: h0 is up without anyone confirming anything.
        await dashboard.services.hypervisors.wait_for_state(world.h0.id, "up", 90)
        async with httpx.AsyncClient(base_url=dashboard.url, timeout=60) as http:
            login = await http.post("/api/v1/login", json={"username": "ann", "password": CLIENT_PASSWORD})
            assert login.status_code == 200, login.text
            _, desktop = await ApiClient(http, login.json()["token"]).ready(pool_id)
            assert desktop.vm_id == vm.id
            linked, stream = await asyncio.to_thread(link_through_gateway, desktop)
            stream.close()
            assert linked.ok, linked
    finally:
        await dashboard.stop()
