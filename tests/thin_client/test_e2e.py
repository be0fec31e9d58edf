"""The launcher end to end: its real Tk window on Xvfb, a real dashboard, real viewers.

Each test runs a dashboard (uvicorn, real database) in the test's event loop and
the launcher's window in the same thread, pumped between awaits; the launcher's
broker calls run on its worker thread as on a thin client.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from kvm_vdi_client.api import BrokerClient
from kvm_vdi_client.config import DashboardConfig, ViewerConfig
from kvm_vdi_client.controller import Controller
from kvm_vdi_client.events import Phase
from kvm_vdi_client.machine import SessionMachine

from app.db.schema import pools
from tests.broker.records import CLIENT_PASSWORD, add_client, add_hypervisor, add_pool
from tests.dashboard import DashboardFactory, RunningDashboard
from tests.services.xvfb import Xvfb
from tests.thin_client.launcher_ui import CmdlineWatch, Ui
from tests.thin_client.standins import StandInViewer
from tests.waiting import eventually

LauncherFactory = Callable[..., Ui]
SESSION_SCRIPT = Path(__file__).resolve().parents[2] / "thin_client" / "session" / "vdi-session"


@pytest.fixture
async def launcher(xvfb: Xvfb, tmp_path: Path) -> AsyncIterator[LauncherFactory]:
    """``launcher(url)``: the launcher window for that dashboard; stand-in viewers go in tmp/bin."""
    made: list[Ui] = []

    def make(url: str, *, viewer: ViewerConfig | None = None, path: str | None = None) -> Ui:
        client = BrokerClient(DashboardConfig(url=url, timeout=30))
        env = {**xvfb.env, "PATH": path if path is not None else f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
        controller = Controller(SessionMachine(), client, viewer or ViewerConfig(kiosk=True), viewer_env=env)
        ui = Ui(xvfb, controller)
        made.append(ui)
        return ui

    yield make
    for ui in made:
        # Off the event loop: closing releases the lease at the dashboard, which runs in this loop.
        await asyncio.to_thread(ui.controller.close)
        ui.close()
    made.clear()
    gc.collect()  # free Tk objects on this thread


async def log_in(ui: Ui, username: str, password: str) -> None:
    await ui.type_async(username)
    await ui.keys_async("Tab")
    await ui.type_async(password)
    await ui.keys_async("Return")
    await ui.until_async(lambda: bool(ui.window.pool_tree.get_children()), "pool list shown")


async def test_a_full_pool_with_rdp_failover_starts_a_stand_in_xfreerdp_with_the_password_on_stdin_only(
    dashboard: RunningDashboard, launcher: LauncherFactory, tmp_path: Path
) -> None:
    """No free desktop in the pool: the dashboard answers 409 with its RDP failover, and the
    launcher starts the RDP viewer (here a stand-in that records argv and stdin byte for byte;
    test_rdp_failover.py runs the real xfreerdp against a real RDP server). The password
    reaches it on stdin and is in no process's command line."""
    db = dashboard.services.db
    await add_hypervisor(db)
    erin = await add_client(db, "erin")
    pool_id = await add_pool(db, "Reception", [], [erin])
    await db.execute(
        sa.update(pools)
        .where(pools.c.id == pool_id)
        .values(failover_kind="rdp", failover_host="rdp.example.org", failover_domain="EXAMPLE")
    )
    rdp = StandInViewer(tmp_path / "bin", "xfreerdp")
    ui = launcher(dashboard.url)

    with CmdlineWatch(CLIENT_PASSWORD) as watch:
        await log_in(ui, "erin", CLIENT_PASSWORD)
        assert ui.window.pool_tree.item(str(pool_id))["values"] == ["0 of 0", ""]
        await ui.keys_async("Return")
        await ui.until_async(lambda: rdp.started, "RDP viewer started")
        assert ui.controller.machine.phase is Phase.FAILOVER
        await ui.settle_async(0.5)
    assert watch.samples > 0
    assert watch.hits == []

    record = rdp.record()
    assert record["argv"][1:] == [
        "/f", "/v:rdp.example.org", "/d:EXAMPLE", "/u:erin", "/from-stdin:force", "/cert:deny"
    ]  # fmt: skip
    assert not any(CLIENT_PASSWORD in arg for arg in record["argv"])
    assert record["stdin"] == CLIENT_PASSWORD + "\n"

    rdp.close()
    await ui.until_async(lambda: ui.controller.machine.phase is Phase.LOGGED_OUT, "back at the login screen")
    await ui.until_async(lambda: ui.root.winfo_viewable() == 1, "launcher window shown again")
    assert ui.window.login_notice.cget("text") == "Your session has ended."


async def full_pool_with_failover(dashboard: RunningDashboard, username: str, **failover: str) -> int:
    db = dashboard.services.db
    await add_hypervisor(db)
    pool_id = await add_pool(db, "Reception", [], [await add_client(db, username)])
    await db.execute(sa.update(pools).where(pools.c.id == pool_id).values(**failover))
    return pool_id


async def test_a_full_pool_with_horizon_failover_starts_a_stand_in_vmware_view_without_the_password(
    dashboard: RunningDashboard, launcher: LauncherFactory, tmp_path: Path
) -> None:
    """VMware's Horizon client cannot run here (it is not free software and has no Debian
    package): a stand-in ``vmware-view`` records what the launcher gives it. No password."""
    await full_pool_with_failover(
        dashboard,
        "gina",
        failover_kind="horizon",
        failover_host="https://horizon.example.org",
        failover_pool="Lab",
    )
    horizon = StandInViewer(tmp_path / "bin", "vmware-view")
    ui = launcher(dashboard.url)
    await log_in(ui, "gina", CLIENT_PASSWORD)
    await ui.keys_async("Return")
    await ui.until_async(lambda: horizon.started, "Horizon client started")
    record = horizon.record()
    assert record["argv"][1:] == [
        "--serverURL=https://horizon.example.org",
        "--userName=gina",
        "--fullscreen",
        "--desktopName=Lab",
        "--nonInteractive",
    ]
    assert record["stdin"] == ""
    horizon.close()
    await ui.until_async(lambda: ui.controller.machine.phase is Phase.LOGGED_OUT, "back at the login screen")


async def test_a_missing_rdp_viewer_is_a_message_on_screen_naming_the_package(
    dashboard: RunningDashboard, launcher: LauncherFactory, tmp_path: Path
) -> None:
    await full_pool_with_failover(dashboard, "hank", failover_kind="rdp", failover_host="rdp.example.org")
    (tmp_path / "empty").mkdir()
    ui = launcher(dashboard.url, path=str(tmp_path / "empty"))
    await log_in(ui, "hank", CLIENT_PASSWORD)
    await ui.keys_async("Return")
    await ui.until_async(lambda: ui.controller.machine.phase is Phase.ERROR, "error shown")
    await ui.until_async(lambda: ui.root.winfo_viewable() == 1, "launcher window shown")
    assert ui.window.error_label.cget("text") == (
        "The RDP viewer (xfreerdp) is not installed on this thin client "
        "(program 'xfreerdp' not found; install freerdp2-x11)."
    )
    assert ui.focused() is ui.window.back_button
    await ui.keys_async("Return")
    await ui.until_async(lambda: ui.controller.machine.phase is Phase.CHOOSING_POOL, "back to the pools")


async def test_a_dashboard_that_stops_gives_a_readable_message_and_a_retry_that_works_once_it_is_back(
    dashboard_factory: DashboardFactory, launcher: LauncherFactory, caplog: pytest.LogCaptureFixture
) -> None:
    first = await dashboard_factory()
    db = first.services.db
    await add_hypervisor(db)
    await add_pool(db, "Office", [], [await add_client(db, "fred")])
    ui = launcher(first.url)
    window = ui.window
    await log_in(ui, "fred", CLIENT_PASSWORD)

    await first.stop()
    with caplog.at_level(logging.DEBUG):
        # Refresh from the keyboard: pool list -> Connect -> Refresh.
        await ui.keys_async("Tab", "Tab", "Return")
        await ui.until_async(lambda: ui.controller.machine.phase is Phase.ERROR, "error shown")
    assert (
        window.error_label.cget("text")
        == f"The dashboard at {first.url} refused the connection (is it running?)."
    )
    assert window.retry_button.winfo_ismapped()
    assert ui.focused() is window.retry_button
    assert not [r for r in caplog.records if r.name.startswith("kvm_vdi_client") and r.exc_info]

    # The dashboard comes back on the same address with the same database: Retry picks up.
    port = first.settings.server.port
    await dashboard_factory(admin_password=None, server={"host": "127.0.0.1", "port": port})
    await ui.keys_async("Return")
    await ui.until_async(lambda: ui.controller.machine.phase is Phase.CHOOSING_POOL, "pools again")
    await ui.until_async(lambda: bool(window.pool_tree.get_children()), "pool list shown")
    assert window.error_label.winfo_ismapped() == 0


def write_kiosk_config(directory: Path, url: str, *, pool: str, password: str, restart: bool) -> Path:
    secret = directory / "kiosk.password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    config = directory / "config.toml"
    config.write_text(
        f'[dashboard]\nurl = "{url}"\ntimeout = 30\n'
        f'[kiosk]\nusername = "kiosk1"\npassword_file = "{secret}"\npool = "{pool}"\n'
        f"restart = {str(restart).lower()}\nrestart_delay = 0.5\n"
        f'[logging]\ntarget = "file"\nfile = "{directory / "launcher.log"}"\nlevel = "debug"\n'
    )
    return config


async def wait_for(condition: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    await eventually(condition, what, timeout=limit)


async def test_a_kiosk_started_by_its_session_script_logs_in_fails_over_and_reconnects(
    dashboard: RunningDashboard, xvfb: Xvfb, tmp_path: Path
) -> None:
    """The installed program, started by vdi-session as on a thin client: auto-login with the
    root-only password file, auto-selection of its pool, failover to RDP, and after the viewer
    closes a new log-in and connection; SIGTERM ends it cleanly."""
    db = dashboard.services.db
    await add_hypervisor(db)
    pool_id = await add_pool(db, "Hall", [], [await add_client(db, "kiosk1")])
    await db.execute(
        sa.update(pools)
        .where(pools.c.id == pool_id)
        .values(failover_kind="rdp", failover_host="rdp.example.org")
    )
    rdp = StandInViewer(tmp_path / "bin", "xfreerdp")
    config = write_kiosk_config(tmp_path, dashboard.url, pool="Hall", password=CLIENT_PASSWORD, restart=True)
    launcher_bin = Path(sys.executable).parent
    env = {
        **xvfb.env,
        "PATH": f"{tmp_path / 'bin'}:{launcher_bin}:{os.environ['PATH']}",
        "KVM_VDI_CLIENT_CONFIG": str(config),
    }
    session = subprocess.Popen(
        [str(SESSION_SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        with CmdlineWatch(CLIENT_PASSWORD) as watch:
            await wait_for(lambda: rdp.runs() >= 1, "first RDP viewer started")
            first = rdp.record(1)
            assert first["argv"][1:] == [
                "/f",
                "/v:rdp.example.org",
                "/u:kiosk1",
                "/from-stdin:force",
                "/cert:deny",
            ]
            assert first["stdin"] == CLIENT_PASSWORD + "\n"
            rdp.close(1)
            await wait_for(lambda: rdp.runs() >= 2, "RDP viewer started again after it was closed")
            assert rdp.record(2)["stdin"] == CLIENT_PASSWORD + "\n"
        assert watch.samples > 0 and watch.hits == []
    finally:
        session.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(session.communicate, timeout=30)
    assert session.returncode == 0, output.decode(errors="replace")
    log = (tmp_path / "launcher.log").read_text()
    assert "session: Failover -> LoggedOut" in log
    assert "Traceback" not in log
    assert CLIENT_PASSWORD not in log
    # The stand-in of the second run was terminated with the launcher.
    second = rdp.record(2)["pid"]
    await wait_for(lambda: not Path(f"/proc/{second}").exists(), "viewer ended with the launcher")
