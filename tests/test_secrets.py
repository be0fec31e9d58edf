"""No secret reaches the logs: database password, session secret, user passwords, first-admin password.

A dashboard on MariaDB (URL with a password) and a configured session secret
bootstraps its first admin, who logs in, changes the password, fails a log-in,
adds hypervisors and logs out, with every logger at DEBUG. Neither the logs nor
stdout or stderr (a service's journal) may contain any of those secrets; the
generated first-admin password is only in its 0600 file, whose path the log names.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from app.auth.first_admin import first_admin_password_path
from tests.dashboard import RunningDashboard, make_settings, start_dashboard
from tests.services.mariadb import MariaDB

SESSION_SECRET = "session-secret-4c1d9e0b7a6f5e3d"
NEW_PASSWORD = "brand-new-admin-pw-7781"
WRONG_GUESS = "wrong-guess-pw-5512"


async def test_secrets_never_appear_in_logs(
    tmp_path: Path,
    mariadb: MariaDB,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    mariadb.reset()
    assert mariadb.password and mariadb.password in mariadb.url
    settings = make_settings(tmp_path / "var", mariadb.url, security={"session_secret": SESSION_SECRET})
    running = await start_dashboard(settings, admin_password=None)
    try:
        await _exercise(running, caplog, capfd)
    finally:
        await running.stop()


async def _exercise(
    running: RunningDashboard, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    mariadb_password = running.settings.database_url.get_secret_value().split(":")[2].split("@")[0]
    out = capfd.readouterr().out
    password_file = first_admin_password_path(running.settings.data_dir)
    first_password = password_file.read_text().splitlines()[1]
    assert str(password_file) in caplog.text, "the log says where the password is"

    client = running.client()
    assert (await client.login("admin", WRONG_GUESS)).status_code == 401
    login = await client.login("admin", first_password)
    assert login.headers["location"] == "/account/password"
    changed = await client.post(
        "/account/password",
        {"current_password": first_password, "new_password": NEW_PASSWORD, "repeat_password": NEW_PASSWORD},
    )
    assert changed.status_code == 303
    await client.refresh_csrf("/")
    added = await client.post(
        "/hypervisors/new",
        {"name": "s1", "transport": "test", "images_dir": "/i", "volatile_dir": "/v", "iso_dir": "/o"},
    )
    assert added.status_code == 303
    await client.post("/api/v1/admin/hypervisors", json={"name": "s2", "transport": "test"})
    assert (await client.get("/settings")).status_code == 200
    assert (await client.post("/logout")).status_code == 303

    captured = capfd.readouterr()
    logs = caplog.text + captured.err
    assert "login_failed" in caplog.text and "password_changed" in caplog.text, "the actions were logged"
    for secret in [mariadb_password, SESSION_SECRET, first_password, NEW_PASSWORD, WRONG_GUESS]:
        assert secret not in logs
        assert secret not in captured.out
    for secret in [mariadb_password, SESSION_SECRET, first_password]:
        assert secret not in out, "standard output is no terminal here: a journal"

    audit = await running.services.audit.recent(limit=100)
    assert not any(
        secret in repr(entry) for entry in audit for secret in [first_password, NEW_PASSWORD, WRONG_GUESS]
    )
