"""RDP failover for real: the launcher's Tk window on Xvfb, a real dashboard whose pool is full,
the real xfreerdp started by the launcher, and a real RDP server (xrdp with an Xorg session, in
a network namespace of its own) showing its desktop on the thin client's screen.

The Horizon failover has no such test: VMware's client cannot run here, so its tests in
``test_e2e.py`` use a stand-in viewer and say so.
"""

from __future__ import annotations

import asyncio
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
from kvm_vdi_client.model import RdpFailover
from kvm_vdi_client.rdp import exit_reason, normalise_fingerprint
from kvm_vdi_client.viewers import rdp_launch, start_viewer

from app.auth.passwords import hash_password
from app.clock import utcnow
from app.db.schema import pools, users
from tests.broker.records import add_hypervisor, add_pool
from tests.dashboard import RunningDashboard
from tests.i18n.artefacts import artefact
from tests.services.guests import Screen, load_image
from tests.services.ports import allocate_port, release_port
from tests.services.xrdp import SESSION_RGB, XrdpServer
from tests.services.xvfb import Xvfb
from tests.thin_client.launcher_ui import CmdlineWatch, Ui
from tests.waiting import eventually

LauncherFactory = Callable[..., Ui]


@pytest.fixture
async def launcher(xvfb: Xvfb, tmp_path: Path) -> AsyncIterator[LauncherFactory]:
    """``launcher(url, viewer)``: the launcher window starting the real xfreerdp on the Xvfb display,
    with a home directory of its own (xfreerdp keeps its settings there, as on a thin client)."""
    made: list[Ui] = []
    home = tmp_path / "home"
    home.mkdir()

    def make(url: str, viewer: ViewerConfig, **env_extra: str) -> Ui:
        client = BrokerClient(DashboardConfig(url=url, timeout=30))
        env = {**xvfb.env, "HOME": str(home), "PATH": os.environ["PATH"], **env_extra}
        ui = Ui(xvfb, Controller(SessionMachine(), client, viewer, viewer_env=env))
        made.append(ui)
        return ui

    yield make
    for ui in made:
        await asyncio.to_thread(ui.controller.close)  # stops a viewer still running
        ui.close()
    made.clear()
    gc.collect()  # free Tk objects on this thread


async def full_pool_with_rdp_failover(dashboard: RunningDashboard, server: XrdpServer) -> int:
    """A pool without a desktop, falling over to the RDP server, usable by the server's account
    (the same user name and password on the dashboard and on the RDP host, as with a directory)."""
    db = dashboard.services.db
    await add_hypervisor(db)
    user_id = int(
        await db.execute(
            users.insert().values(
                username=server.username,
                source="local",
                role="client",
                password_hash=await asyncio.to_thread(hash_password, server.password),
                created_at=utcnow(),
            )
        )
    )
    pool_id = await add_pool(db, "Reception", [], [user_id])
    await db.execute(
        sa.update(pools).where(pools.c.id == pool_id).values(failover_kind="rdp", failover_host=server.host)
    )
    return pool_id


async def log_in_and_connect(ui: Ui, server: XrdpServer) -> None:
    await ui.type_async(server.username)
    await ui.keys_async("Tab")
    await ui.type_async(server.password)
    await ui.keys_async("Return")
    await ui.until_async(lambda: bool(ui.window.pool_tree.get_children()), "pool list shown")
    await ui.keys_async("Return")


async def screen(ui: Ui, xvfb: Xvfb, path: Path) -> Screen:
    await ui.settle_async(0.2)
    return load_image(await asyncio.to_thread(xvfb.screenshot, path))


def shows_rdp_session(desktop: Screen) -> bool:
    return desktop.fraction(SESSION_RGB) > 0.8 and desktop.pixel(220, 100) == (255, 255, 255)


async def log_off_there(ui: Ui, server: XrdpServer) -> None:
    """The user logs off in the RDP desktop: xfreerdp exits and the launcher's session ends."""
    server.log_off()
    machine = ui.controller.machine
    await ui.until_async(lambda: machine.phase is not Phase.FAILOVER, "xfreerdp closed")
    viewer = ui.controller.viewer
    status = viewer.process.returncode if viewer else None
    assert machine.phase is Phase.LOGGED_OUT, f"{machine.error} (xfreerdp exit status {status})"
    assert ui.window.login_notice.cget("text") == "Your session has ended."


async def test_the_launcher_shows_the_rdp_desktop_in_xfreerdp_when_the_pool_is_full(
    dashboard: RunningDashboard, launcher: LauncherFactory, xvfb: Xvfb, xrdp_server: XrdpServer
) -> None:
    """The pool has no free desktop: the launcher starts xfreerdp, which logs in to the RDP server
    with the user's password from stdin (in no command line) and pins the server's self-signed
    certificate; the RDP desktop fills the thin client's screen. When the user logs off there, the
    launcher comes back with its login screen."""
    await full_pool_with_rdp_failover(dashboard, xrdp_server)
    pin = normalise_fingerprint(xrdp_server.certificate_sha256)
    ui = launcher(dashboard.url, ViewerConfig(kiosk=True, rdp_certificates=(pin,)))
    shot = artefact("thin_client/rdp-failover-session.png")

    with CmdlineWatch(xrdp_server.password) as watch:
        await log_in_and_connect(ui, xrdp_server)
        await ui.until_async(lambda: ui.controller.viewer is not None, "xfreerdp started")
        # The RDP session's desktop covers the screen: its root window's colour, and the xterm its
        # session script opened (white, at the top left); the launcher has stepped aside.
        async with asyncio.timeout(90):
            while not shows_rdp_session(await screen(ui, xvfb, shot)):
                pass
        assert ui.controller.machine.phase is Phase.FAILOVER
        assert ui.root.winfo_viewable() == 0
    assert watch.samples > 0
    assert watch.hits == []

    viewer = ui.controller.viewer
    assert viewer is not None
    assert list(viewer.launch.argv) == [
        "xfreerdp", "/f", f"/v:{xrdp_server.host}", f"/u:{xrdp_server.username}", "/from-stdin:force",
        f"/cert:deny,fingerprint:sha256:{pin}",
    ]  # fmt: skip
    # The server logged the user in: its session runs the desktop's program as that account.
    await eventually(xrdp_server.session_pids, "a session on the RDP server")

    await log_off_there(ui, xrdp_server)
    await ui.until_async(lambda: ui.root.winfo_viewable() == 1, "launcher window shown again")


async def test_an_rdp_server_whose_certificate_is_not_pinned_is_refused_with_a_message(
    dashboard: RunningDashboard, launcher: LauncherFactory, xvfb: Xvfb, xrdp_server: XrdpServer
) -> None:
    """Without the server's fingerprint in the configuration (and no CA the thin client trusts),
    xfreerdp ends the connection instead of asking on its stdin, and the launcher says why: it no
    longer reports "Your session has ended" for a session that never began. Retry tries again."""
    await full_pool_with_rdp_failover(dashboard, xrdp_server)
    ui = launcher(dashboard.url, ViewerConfig(kiosk=True))
    await log_in_and_connect(ui, xrdp_server)
    await ui.until_async(lambda: ui.controller.machine.phase is Phase.ERROR, "error shown", limit=60)
    await ui.until_async(lambda: ui.root.winfo_viewable() == 1, "launcher window shown")
    assert ui.window.error_label.cget("text") == (
        f"The RDP viewer closed: the certificate of {xrdp_server.host} is not trusted "
        "(pin its SHA-256 fingerprint in viewer.rdp_certificates)."
    )
    failure = await screen(ui, xvfb, artefact("thin_client/rdp-failover-untrusted.png"))
    assert failure.fraction(SESSION_RGB) < 0.05 and not shows_rdp_session(failure)
    assert xrdp_server.session_pids() == []
    assert ui.focused() is ui.window.retry_button

    await ui.keys_async("Return")  # Retry: the viewer starts again, and is refused again
    await ui.until_async(lambda: ui.controller.machine.phase is Phase.ERROR, "error shown again", limit=60)
    await ui.keys_async("Tab", "Return")  # Back ends the session
    await ui.until_async(lambda: ui.controller.machine.phase is Phase.LOGGED_OUT, "back at the login screen")


async def test_an_rdp_server_whose_certificate_comes_from_a_trusted_ca_needs_no_pin(
    dashboard: RunningDashboard,
    launcher: LauncherFactory,
    xvfb: Xvfb,
    xrdp_server: XrdpServer,
    tmp_path: Path,
) -> None:
    """The server's certificate names its address and is signed by a CA the thin client trusts:
    xfreerdp connects with no fingerprint configured. (OpenSSL's default trust store, which
    ``SSL_CERT_FILE`` replaces here, is the thin client's /etc/ssl/certs.)"""
    await full_pool_with_rdp_failover(dashboard, xrdp_server)
    ui = launcher(dashboard.url, ViewerConfig(kiosk=True), SSL_CERT_FILE=str(xrdp_server.ca_file))
    await log_in_and_connect(ui, xrdp_server)
    async with asyncio.timeout(90):
        while not shows_rdp_session(await screen(ui, xvfb, tmp_path / "desktop.png")):
            pass
    assert ui.controller.machine.phase is Phase.FAILOVER
    await log_off_there(ui, xrdp_server)


async def test_the_real_xfreerdp_exit_status_for_an_unreachable_server_reads_could_not_connect(
    xvfb: Xvfb, tmp_path: Path
) -> None:
    """The launcher reads xfreerdp's exit statuses from a table; this checks the table against
    the real program: a port where nothing listens."""
    port = allocate_port()
    try:
        launch = rdp_launch(ViewerConfig(), RdpFailover(f"127.0.0.1:{port}"), "nobody", "pw")
        viewer = start_viewer(launch, env={**xvfb.env, "HOME": str(tmp_path)})
        returncode = await asyncio.wait_for(asyncio.to_thread(viewer.wait), 60)
    finally:
        release_port(port)
    assert exit_reason(returncode) == "it could not connect to {host}", returncode
