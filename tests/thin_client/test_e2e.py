"""The launcher end to end: its real Tk window on Xvfb, a real dashboard, real viewers.

Each test runs a dashboard (uvicorn, real database) in the test's event loop and
the launcher's window in the same thread, pumped between awaits; the launcher's
broker calls run on its worker thread as on a thin client.
"""

from __future__ import annotations

import gc
import os
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
from tests.dashboard import RunningDashboard
from tests.services.xvfb import Xvfb
from tests.thin_client.launcher_ui import CmdlineWatch, Ui
from tests.thin_client.standins import StandInViewer

LauncherFactory = Callable[..., Ui]


@pytest.fixture
async def launcher(xvfb: Xvfb, tmp_path: Path) -> AsyncIterator[LauncherFactory]:
    """``launcher(url)``: the launcher window for that dashboard; stand-in viewers go in tmp/bin."""
    made: list[Ui] = []

    def make(url: str, *, viewer: ViewerConfig | None = None) -> Ui:
        client = BrokerClient(DashboardConfig(url=url, timeout=5))
        env = {**xvfb.env, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
        controller = Controller(SessionMachine(), client, viewer or ViewerConfig(kiosk=True), viewer_env=env)
        ui = Ui(xvfb, controller)
        made.append(ui)
        return ui

    yield make
    for ui in made:
        ui.controller.close()
        ui.close()
    made.clear()
    gc.collect()  # free Tk objects on this thread


async def log_in(ui: Ui, username: str, password: str) -> None:
    await ui.type_async(username)
    await ui.keys_async("Tab")
    await ui.type_async(password)
    await ui.keys_async("Return")
    await ui.until_async(lambda: bool(ui.window.pool_tree.get_children()), "pool list shown")


async def test_a_full_pool_with_rdp_failover_starts_xfreerdp_with_the_password_on_stdin_only(
    dashboard: RunningDashboard, launcher: LauncherFactory, tmp_path: Path
) -> None:
    """No free desktop in the pool: the dashboard answers 409 with its RDP failover, and the
    launcher starts the RDP viewer (a stand-in that records argv and stdin, as no RDP server
    runs here). The password reaches it on stdin and is in no process's command line."""
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
    assert record["argv"][1:] == ["/f", "/v:rdp.example.org", "/d:EXAMPLE", "/u:erin", "/from-stdin:force"]
    assert not any(CLIENT_PASSWORD in arg for arg in record["argv"])
    assert record["stdin"] == CLIENT_PASSWORD + "\n"

    rdp.close()
    await ui.until_async(lambda: ui.controller.machine.phase is Phase.LOGGED_OUT, "back at the login screen")
    await ui.until_async(lambda: ui.root.winfo_viewable() == 1, "launcher window shown again")
    assert ui.window.login_notice.cget("text") == "Your session has ended."
