"""The whole path of a thin-client session: the launcher's Tk window on Xvfb logs in to a real
dashboard, gets a desktop (the banner guest under KVM on hypervisor h0, started on request),
and the real remote-viewer shows it through the dashboard's CONNECT gateway.
"""

from __future__ import annotations

import asyncio
import configparser
import gc
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from kvm_vdi_client.api import BrokerClient
from kvm_vdi_client.config import DashboardConfig, ViewerConfig
from kvm_vdi_client.controller import Controller
from kvm_vdi_client.events import Phase
from kvm_vdi_client.machine import SessionMachine

from app import db as database
from app.clock import utcnow
from app.db.schema import hypervisors, pools, vms
from app.hyper.sshkeys import ensure_dashboard_key
from tests.broker.records import CLIENT_PASSWORD, add_client, add_pool
from tests.dashboard import RunningDashboard, make_settings, start_dashboard
from tests.hyper.conftest import row_values, ssh_record
from tests.services import guests
from tests.services.guests import GuestImages, load_image
from tests.services.libvirt_host import LibvirtHost
from tests.services.xvfb import Xvfb
from tests.thin_client.banner import shows_banner_guest
from tests.thin_client.launcher_ui import CmdlineWatch, Ui
from tests.waiting import eventually

pytestmark = [pytest.mark.kvm]

DOMAIN = "tc-e2e-banner"


@dataclass
class SpiceDesktop:
    dashboard: RunningDashboard
    host: LibvirtHost
    hypervisor_id: int
    vm_id: int


@pytest.fixture
async def spice_desktop(
    hypervisor_host: LibvirtHost, guest_images: GuestImages, tmp_path: Path, database_url: str
) -> AsyncIterator[SpiceDesktop]:
    """A dashboard managing h0 over SSH; the banner guest, defined but shut off, is the only
    desktop of pool "Banner", which client "ivy" may use."""
    settings = make_settings(tmp_path / "var", database_url)
    key = await asyncio.to_thread(ensure_dashboard_key, settings.data_dir / "ssh")
    hypervisor_host.authorize(key.public_line)
    disk = guest_images.overlay("banner", hypervisor_host.images_dir / f"{DOMAIN}.qcow2")
    await asyncio.to_thread(database.upgrade, database_url)
    db = database.connect_database(database_url)
    await db.connect()
    try:
        hv_id = int(
            await db.execute(
                hypervisors.insert().values(**row_values(ssh_record(hypervisor_host, name="h0-tc")))
            )
        )
        vm_id = int(
            await db.execute(
                vms.insert().values(
                    name=DOMAIN, hypervisor_id=hv_id, kind="vdi", disk_path=str(disk), created_at=utcnow()
                )
            )
        )
        await add_pool(db, "Banner", [vm_id], [await add_client(db, "ivy")])
    finally:
        await db.disconnect()
    dashboard = await start_dashboard(settings)
    try:
        xml = guests.domain_xml(
            DOMAIN,
            disk,
            virt_type=hypervisor_host.virt_type,
            spice_listen=hypervisor_host.spice_listen,
            spice_password="initial-never-valid",
        )
        # Desktops never accept a connection until the dashboard sets a password for one console,
        # and speak SPICE over TLS only.
        xml = xml.replace("<graphics ", "<graphics passwdValidTo='1970-01-01T00:00:00' ", 1)
        xml = xml.replace("defaultMode='insecure'", "defaultMode='secure'", 1)
        await dashboard.services.hypervisors.get(hv_id).define(xml)
        yield SpiceDesktop(dashboard, hypervisor_host, hv_id, vm_id)
    finally:
        await dashboard.stop()
        hypervisor_host.virsh("destroy", DOMAIN, check=False)
        hypervisor_host.virsh("undefine", DOMAIN, check=False)
        disk.unlink(missing_ok=True)


@pytest.fixture
async def launcher(xvfb: Xvfb) -> AsyncIterator[Callable[[str], Ui]]:
    made: list[Ui] = []

    def make(url: str) -> Ui:
        client = BrokerClient(DashboardConfig(url=url, timeout=30))
        controller = Controller(SessionMachine(), client, ViewerConfig(kiosk=True), viewer_env=xvfb.env)
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


async def open_desktop(ui: Ui, watch: CmdlineWatch) -> dict[str, str]:
    """Log in as ivy with the keyboard, connect to the pool, and return the .vv the viewer got."""
    await ui.type_async("ivy")
    await ui.keys_async("Tab")
    await ui.type_async(CLIENT_PASSWORD)
    await ui.keys_async("Return")
    await ui.until_async(lambda: bool(ui.window.pool_tree.get_children()), "pool list shown")
    await ui.keys_async("Return")
    await ui.until_async(lambda: ui.controller.viewer is not None, "viewer started", limit=120)
    viewer = ui.controller.viewer
    assert viewer is not None
    vv = configparser.ConfigParser(interpolation=None)
    vv.read_string(viewer.launch.stdin.decode())
    fields = dict(vv["virt-viewer"])
    # From now on the watch also looks for the SPICE password and the console ticket.
    watch.add(fields["password"])
    ticket = urlsplit(fields["proxy"]).password
    assert ticket
    watch.add(ticket)
    return fields


async def wait_for_banner(ui: Ui, xvfb: Xvfb, shot: Path, limit: float = 90) -> None:
    async def shown() -> bool:
        ui.root.update()  # the launcher handles its events meanwhile (it runs in this thread)
        return shows_banner_guest(load_image(await asyncio.to_thread(xvfb.screenshot, shot)))

    await eventually(shown, f"the guest on the thin client's screen (see {shot})", timeout=limit)


async def test_the_launcher_shows_the_desktop_in_remote_viewer_through_the_gateway(
    spice_desktop: SpiceDesktop, launcher: Callable[[str], Ui], xvfb: Xvfb, tmp_path: Path
) -> None:
    dashboard = spice_desktop.dashboard
    gateway = dashboard.services.consoles.gateway
    assert gateway is not None
    ui = launcher(dashboard.url)
    with CmdlineWatch(CLIENT_PASSWORD) as watch:
        fields = await open_desktop(ui, watch)
        # The .vv names the desktop's real SPICE endpoint, over TLS only, with the CA that signed
        # its certificate, and reaches it through the gateway.
        hv = dashboard.services.hypervisors.get(spice_desktop.hypervisor_id)
        endpoint = await hv.spice_endpoint(DOMAIN)
        assert (fields["host"], int(fields["tls-port"])) == (endpoint.host, endpoint.tls_port)
        assert "port" not in fields
        assert fields["host-subject"] == f"CN={endpoint.host}"
        assert fields["ca"].startswith("-----BEGIN CERTIFICATE-----\\n")
        assert urlsplit(fields["proxy"]).port == gateway.port
        await wait_for_banner(ui, xvfb, tmp_path / "desktop.png")
        assert ui.controller.machine.phase is Phase.VIEWING
        assert ui.root.winfo_viewable() == 0  # the launcher stepped aside for the viewer
        # The pixels on the thin client's screen came through the dashboard's gateway.
        (session,) = [s for s in dashboard.services.consoles.sessions.sessions() if s.via == "gateway"]
        assert session.ticket.vm_id == spice_desktop.vm_id and session.ticket.username == "ivy"
        assert session.bytes_to_client > 0
        await ui.settle_async(1.0)
    assert watch.samples > 0
    assert watch.hits == []
    argv = ui.controller.viewer.launch.argv if ui.controller.viewer else ()
    assert list(argv) == ["remote-viewer", "--kiosk", "--kiosk-quit", "on-disconnect", "-"]


async def test_stopping_the_dashboard_mid_session_gives_a_readable_message_and_a_retry(
    spice_desktop: SpiceDesktop,
    launcher: Callable[[str], Ui],
    xvfb: Xvfb,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dashboard = spice_desktop.dashboard
    ui = launcher(dashboard.url)
    with CmdlineWatch(CLIENT_PASSWORD) as watch:
        await open_desktop(ui, watch)
        await wait_for_banner(ui, xvfb, tmp_path / "desktop.png")
    with caplog.at_level(logging.DEBUG):
        await dashboard.stop()
        # The gateway went with the dashboard: the viewer loses the desktop and quits, and the
        # launcher cannot release the lease.
        await ui.until_async(lambda: ui.controller.machine.phase is Phase.ERROR, "error shown", limit=120)
    window = ui.window
    await ui.until_async(lambda: ui.root.winfo_viewable() == 1, "launcher window shown again")
    assert window.error_label.cget("text").startswith(
        f"The dashboard at {dashboard.url} refused the connection (is it running?)."
    )
    assert "lease expires" in window.error_label.cget("text")
    assert window.retry_button.winfo_ismapped() and ui.focused() is window.retry_button
    assert not [r for r in caplog.records if r.name.startswith("kvm_vdi_client") and r.exc_info]
    assert watch.hits == []


async def test_straight_to_the_desktop_the_launcher_shows_it_without_a_pool_choice(
    spice_desktop: SpiceDesktop, launcher: Callable[[str], Ui], xvfb: Xvfb, tmp_path: Path
) -> None:
    """The pool says "straight to the desktop" and is ivy's only one: after log-in the viewer
    shows the desktop, and the launcher never showed its pool list."""
    dashboard = spice_desktop.dashboard
    await dashboard.services.db.execute(sa.update(pools).values(straight_to_desktop=True))
    ui = launcher(dashboard.url)
    await ui.type_async("ivy")
    await ui.keys_async("Tab")
    await ui.type_async(CLIENT_PASSWORD)
    await ui.keys_async("Return")
    await ui.until_async(lambda: ui.controller.viewer is not None, "viewer started", limit=120)
    await wait_for_banner(ui, xvfb, tmp_path / "desktop.png")
    assert ui.controller.machine.phase is Phase.VIEWING
    assert ui.window.pool_tree.get_children() == ()
