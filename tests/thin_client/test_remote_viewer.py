"""The launcher opens a real banner guest in the real remote-viewer, the .vv arriving on stdin.

The desktop runs on the harness hypervisor with a SPICE password; the broker's
answers come from a scripted HTTPS endpoint carrying that guest's real endpoint
(the dashboard and its CONNECT gateway are exercised in test_e2e.py).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest
from kvm_vdi_client.api import BrokerClient
from kvm_vdi_client.config import DashboardConfig, ViewerConfig
from kvm_vdi_client.controller import Controller
from kvm_vdi_client.events import Phase
from kvm_vdi_client.machine import SessionMachine

from tests.services import guests
from tests.services.guests import GuestImages, load_image
from tests.services.libvirt_host import LibvirtHost
from tests.services.xvfb import Xvfb
from tests.thin_client.banner import shows_banner_guest
from tests.thin_client.launcher_ui import CmdlineWatch, Ui
from tests.thin_client.scripted_broker import Certificates, ScriptedBroker
from tests.waiting import eventually_blocking

pytestmark = [pytest.mark.kvm]

SPICE_PASSWORD = "Sp1ce-banner-pw"
USER_PASSWORD = "viewer-user-pw"


@pytest.fixture
def banner_guest(hypervisor_host: LibvirtHost, guest_images: GuestImages) -> Iterator[libvirt.virDomain]:
    conn = libvirt.open(hypervisor_host.ssh_uri())
    name = "tc-banner-viewer"
    disk = guest_images.overlay("banner", hypervisor_host.images_dir / f"{name}.qcow2")
    xml = guests.domain_xml(
        name,
        disk,
        virt_type=hypervisor_host.virt_type,
        spice_listen=hypervisor_host.spice_listen,
        spice_password=SPICE_PASSWORD,
    )
    domain = conn.defineXML(xml)
    domain.create()
    try:
        guests.wait_for_screen(domain, guests.BLUE, fraction=0.8, timeout=60)
        yield domain
    finally:
        if domain.isActive():
            domain.destroy()
        domain.undefine()
        disk.unlink(missing_ok=True)
        conn.close()


def spice_port(domain: libvirt.virDomain) -> int:
    return int(domain.XMLDesc().split("<graphics type='spice' port='")[1].split("'")[0])


def wait_for_banner(xvfb: Xvfb, ui: Ui, shot: Path, limit: float = 60.0) -> None:
    eventually_blocking(
        ui.pumped(lambda: shows_banner_guest(load_image(xvfb.screenshot(shot)))),
        f"the guest on the thin client's screen (see {shot})",
        timeout=limit,
    )


@pytest.fixture
def viewer_launcher(xvfb: Xvfb) -> Iterator[Callable[[ScriptedBroker, Certificates], Ui]]:
    made: list[Ui] = []

    def make(broker: ScriptedBroker, certificates: Certificates) -> Ui:
        client = BrokerClient(DashboardConfig(url=broker.url, ca_file=certificates.ca))
        controller = Controller(SessionMachine(), client, ViewerConfig(kiosk=True), viewer_env=xvfb.env)
        ui = Ui(xvfb, controller)
        made.append(ui)
        return ui

    yield make
    for ui in made:
        ui.controller.close()
        ui.close()
    made.clear()
    gc.collect()


def test_remote_viewer_shows_the_guest_and_the_spice_password_is_in_no_command_line(
    banner_guest: libvirt.virDomain,
    hypervisor_host: LibvirtHost,
    broker: ScriptedBroker,
    certificates: Certificates,
    viewer_launcher: Callable[[ScriptedBroker, Certificates], Ui],
    xvfb: Xvfb,
    tmp_path: Path,
) -> None:
    ready = {
        "status": "ready",
        "lease": {"id": 5, "expires_at": "2030-01-01T00:00:00", "heartbeat_interval": 1},
        "desktop": {"vm_id": 1, "name": "tc-banner-viewer", "state": "running"},
        "connection": {
            "protocol": "spice",
            "host": hypervisor_host.spice_listen,
            "port": spice_port(banner_guest),
            "password": SPICE_PASSWORD,
            "proxy": None,
            "title": "Banner",
        },
    }
    broker.on("POST", "/login", (200, {}, {"token": "t", "user": {"username": "ivy"}}))
    broker.on("GET", "/pools", (200, {}, {"pools": [{"id": 1, "name": "Banner", "size": 1, "free": 1}]}))
    broker.on("POST", "/pools/1/desktop", (200, {}, ready))
    broker.on("POST", "/leases/5/heartbeat", (200, {}, {"expires_at": "2030-01-01T00:00:10"}))
    broker.on("POST", "/leases/5/release", (204, {}, None))
    broker.on("POST", "/logout", (204, {}, None))
    ui = viewer_launcher(broker, certificates)

    with CmdlineWatch(SPICE_PASSWORD, USER_PASSWORD) as watch:
        ui.type("ivy")
        ui.keys("Tab")
        ui.type(USER_PASSWORD)
        ui.keys("Return")
        ui.until(lambda: bool(ui.window.pool_tree.get_children()), "pools listed")
        # The pattern check tells the launcher's own screen from the guest's.
        assert not shows_banner_guest(load_image(xvfb.screenshot(tmp_path / "launcher.png")))
        ui.keys("Return")
        ui.until(lambda: ui.controller.machine.phase is Phase.VIEWING, "viewing")
        wait_for_banner(xvfb, ui, tmp_path / "viewer.png")
        assert ui.root.winfo_viewable() == 0  # the launcher stepped aside for the viewer
        ui.until(lambda: len(broker.calls("POST", "/leases/5/heartbeat")) >= 1, "heartbeat sent")

        # The desktop goes away: remote-viewer (--kiosk-quit on-disconnect) exits, the lease is released.
        banner_guest.destroy()
        ui.until(lambda: ui.controller.machine.phase is Phase.LOGGED_OUT, "back at the login screen")
    assert watch.samples > 0 and watch.hits == []
    assert len(broker.calls("POST", "/leases/5/release")) == 1
    assert ui.root.winfo_viewable() == 1
