"""The kvm-vdi command line, run as a subprocess the way an admin runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import db as database
from app.auth.passwords import verify_password
from app.db.schema import users
from tests.cli import cli_env, kvm_vdi


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return cli_env(database_url, tmp_path / "var")


async def _user(database_url: str, name: str, password: str) -> tuple[bool, bool | None]:
    """(whether the password works, the must-change flag) of a local user."""
    db = database.connect_database(database_url)
    await db.connect()
    try:
        row = await db.fetch_one(users.select().where(users.c.username == name))
        if row is None:
            return False, None
        return verify_password(row["password_hash"], password), bool(row["must_change_password"])
    finally:
        await db.disconnect()


def test_db_upgrade_migrates_an_empty_database(env: dict[str, str], database_url: str) -> None:
    result = kvm_vdi("db", "upgrade", env=env)
    assert result.returncode == 0, result.stderr
    assert f"at revision {database.head_revision()}" in result.stdout
    assert database.current_revision(database_url) == database.head_revision()


async def test_admin_create_reads_the_password_from_stdin(env: dict[str, str], database_url: str) -> None:
    result = kvm_vdi("admin", "create", "alice", "--password-stdin", env=env, stdin="alice-password-1\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "administrator alice created"
    assert "alice-password-1" not in result.stdout + result.stderr
    assert await _user(database_url, "alice", "alice-password-1") == (True, False)


async def test_admin_create_refuses_a_weak_password_or_a_taken_name(env: dict[str, str]) -> None:
    weak = kvm_vdi("admin", "create", "bob", "--password-stdin", env=env, stdin="short\n")
    assert weak.returncode == 1 and "at least 10 characters" in weak.stderr
    assert (
        kvm_vdi("admin", "create", "bob", "--password-stdin", env=env, stdin="bob-password-1\n").returncode
        == 0
    )
    again = kvm_vdi("admin", "create", "bob", "--password-stdin", env=env, stdin="bob-password-2\n")
    assert again.returncode == 1 and "already exists" in again.stderr


def test_without_a_terminal_the_password_must_come_from_stdin(env: dict[str, str]) -> None:
    result = kvm_vdi("admin", "create", "carol", env=env, stdin="")
    assert result.returncode == 1
    assert "--password-stdin" in result.stderr


async def test_set_password_clears_must_change_unless_temporary(
    env: dict[str, str], database_url: str
) -> None:
    kvm_vdi("admin", "create", "dave", "--password-stdin", "--temporary", env=env, stdin="dave-password-1\n")
    assert await _user(database_url, "dave", "dave-password-1") == (True, True)

    result = kvm_vdi("admin", "set-password", "dave", "--password-stdin", env=env, stdin="dave-password-2\n")
    assert result.returncode == 0, result.stderr
    assert await _user(database_url, "dave", "dave-password-2") == (True, False)
    assert (await _user(database_url, "dave", "dave-password-1"))[0] is False

    temporary = kvm_vdi(
        "admin", "set-password", "dave", "--password-stdin", "--temporary", env=env, stdin="dave-password-3\n"
    )
    assert temporary.returncode == 0 and "temporary" in temporary.stdout
    assert await _user(database_url, "dave", "dave-password-3") == (True, True)


def test_set_password_of_an_unknown_user_fails(env: dict[str, str]) -> None:
    result = kvm_vdi(
        "admin", "set-password", "nobody", "--password-stdin", env=env, stdin="whatever-pass-1\n"
    )
    assert result.returncode == 1 and "no local user named nobody" in result.stderr


def test_check_fails_on_a_database_that_is_not_migrated(env: dict[str, str]) -> None:
    result = kvm_vdi("check", env=env)
    assert result.returncode == 1
    assert "database" in result.stdout and "FAIL" in result.stdout
    assert "kvm-vdi db upgrade" in result.stdout


def test_check_passes_on_a_migrated_database_without_hypervisors(env: dict[str, str]) -> None:
    kvm_vdi("db", "upgrade", env=env)
    result = kvm_vdi("check", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert " ok " in lines["configuration"] and " ok " in lines["database"]
    assert "none registered yet" in lines["hypervisors"]
    assert result.stdout.rstrip().endswith("all checks passed")


@pytest.mark.slow  # a kvm-vdi subprocess waiting out the database timeout
def test_check_reports_an_unreachable_database_without_its_password(tmp_path: Path) -> None:
    url = "mysql://vdi:not-to-be-shown@127.0.0.1:9/vdi"
    result = kvm_vdi("check", env=cli_env(url, tmp_path / "var"))
    assert result.returncode == 1
    assert "mysql://vdi:***@127.0.0.1:9/vdi: cannot connect" in result.stdout
    assert "not-to-be-shown" not in result.stdout + result.stderr


def test_check_masks_the_password_of_a_working_database(mariadb: object, tmp_path: Path) -> None:
    url = mariadb.url  # type: ignore[attr-defined]
    password = mariadb.password  # type: ignore[attr-defined]
    env = cli_env(url, tmp_path / "var")
    kvm_vdi("db", "upgrade", env=env)
    result = kvm_vdi("check", env=env)
    assert "mysql://vdi:***@" in result.stdout
    assert password not in result.stdout + result.stderr


def test_an_invalid_configuration_is_named_without_echoing_values(tmp_path: Path, database_url: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[security]\nsession_max_age = "forever-and-a-secret"\n[server]\nprot = 1\n')
    result = kvm_vdi("--config", str(config), "check", env=cli_env(database_url, tmp_path / "var"))
    assert result.returncode == 2
    assert "security.session_max_age" in result.stderr and "server.prot" in result.stderr
    assert "forever-and-a-secret" not in result.stderr
