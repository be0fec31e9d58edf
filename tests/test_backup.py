"""``kvm-vdi backup`` / ``restore`` refusals: a used database, differing key files, a wrong passphrase,
an altered file, a passphrase that is not asked for properly. (The full round trip with a real
hypervisor and console is tests/broker/test_backup_restore.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from app import db as database
from app.cli import main
from app.db.schema import users
from tests.cli import cli_env, kvm_vdi
from tests.dashboard import DashboardFactory
from tests.log_capture import dashboard_logging

PASSPHRASE = "correct horse battery staple"


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """``main()`` configures the process's logging: put it back afterwards."""
    with dashboard_logging():
        yield


async def test_restore_refuses_what_it_would_destroy_or_cannot_trust(
    dashboard_factory: DashboardFactory,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    logging_restored: None,
) -> None:
    running = await dashboard_factory()
    data_dir = running.settings.data_dir
    env = cli_env(database_url, data_dir)
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSPHRASE + "\n")
    backup = tmp_path / "vdi.backup"
    made = await asyncio.to_thread(
        kvm_vdi, "backup", str(backup), "--passphrase-file", str(passphrase), env=env
    )
    assert made.returncode == 0, made.stderr
    await running.stop()

    def restore(*args: str, url: str = database_url, where: Path = data_dir) -> tuple[int, str]:
        """``kvm-vdi restore`` in this process (the backup above ran as a real command)."""
        for name, value in cli_env(url, where).items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        status = main(["restore", *args, "--passphrase-file", str(passphrase)])
        return status, capsys.readouterr().err

    status, error = await asyncio.to_thread(restore, str(backup))
    assert status == 1 and "is not empty" in error and "--force" in error

    altered = tmp_path / "altered.backup"
    content = bytearray(backup.read_bytes())
    content[len(content) // 2] ^= 0x01
    altered.write_bytes(bytes(content))
    status, error = await asyncio.to_thread(restore, str(altered), "--force")
    assert status == 1 and "damaged or was altered" in error

    passphrase.write_text("not the passphrase at all\n")
    status, error = await asyncio.to_thread(restore, str(backup), "--force")
    assert status == 1 and "wrong passphrase" in error
    passphrase.write_text(PASSPHRASE + "\n")

    # A fresh database, but a data directory holding another key: refused before anything is written.
    other = tmp_path / "other-var"
    (other / "ssh").mkdir(parents=True)
    (other / "ssh" / "id_ed25519").write_text("another key\n")
    fresh_url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    status, error = await asyncio.to_thread(restore, str(backup), url=fresh_url, where=other)
    assert status == 1 and "id_ed25519" in error
    assert not (tmp_path / "fresh.sqlite3").exists() or (tmp_path / "fresh.sqlite3").stat().st_size == 0

    status, error = await asyncio.to_thread(restore, str(backup), "--force")
    assert status == 0, error
    restored = await dashboard_factory(admin_password=None)
    assert [row["username"] for row in await restored.services.db.fetch_all(users.select())] == ["admin"]


def test_the_passphrase_never_comes_from_the_command_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    logging_restored: None,
) -> None:
    for name, value in cli_env(f"sqlite:///{tmp_path / 'vdi.sqlite3'}", tmp_path / "var").items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit):
        main(["backup", "--help"])
    usage = capsys.readouterr().out
    assert "--passphrase-file" in usage and "--passphrase " not in usage
    # No terminal (pytest's stdin) and no file: refused rather than read from somewhere unexpected.
    assert main(["backup", str(tmp_path / "b")]) == 1
    assert "--passphrase-file" in capsys.readouterr().err
    short = tmp_path / "short"
    short.write_text("too short\n")
    assert main(["backup", str(tmp_path / "b"), "--passphrase-file", str(short)]) == 1
    assert "at least 12 characters" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_a_backup_of_an_older_schema_is_restored_then_migrated(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    logging_restored: None,
) -> None:
    first = "0001"
    assert database.head_revision() != first, "there is no later migration to restore into"
    database.upgrade(database_url, first)
    engine = sa.create_engine(database.sync_url(database_url), poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        connection.execute(
            sa.text("INSERT INTO users (username, source, role) VALUES ('olga', 'local', 'admin')")
        )
    engine.dispose()
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSPHRASE + "\n")
    backup = tmp_path / "old.backup"

    def kvm_vdi_here(url: str, data_dir: Path, *args: str) -> tuple[int, str]:
        for name, value in cli_env(url, data_dir).items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        status = main([*args, "--passphrase-file", str(passphrase)])
        captured = capsys.readouterr()
        return status, captured.out + captured.err

    status, output = kvm_vdi_here(database_url, tmp_path, "backup", str(backup))
    assert status == 0 and "(schema 0001)" in output, output
    # Into the other backend's kind of URL on the MariaDB pass: the dump is portable.
    fresh_url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    status, output = kvm_vdi_here(fresh_url, tmp_path / "new", "restore", str(backup))
    assert status == 0, output
    assert database.current_revision(fresh_url) == database.head_revision()
    engine = sa.create_engine(database.sync_url(fresh_url), poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT username FROM users")).scalars().all() == ["olga"]
    engine.dispose()
