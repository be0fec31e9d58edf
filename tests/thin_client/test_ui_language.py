"""The launcher in Lithuanian on a real (virtual) X display: its own words, and the dashboard
asked for its messages in the same language (a screenshot is kept as a test artefact)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvm_vdi_client import i18n
from kvm_vdi_client.api import BrokerClient, BrokerUnreachable, InvalidCredentials
from kvm_vdi_client.config import DashboardConfig, ViewerConfig
from kvm_vdi_client.controller import Controller
from kvm_vdi_client.events import DesktopAnswered, DesktopChecked, Phase, ViewerExited
from kvm_vdi_client.i18n import N_
from kvm_vdi_client.machine import MAX_RECONNECTS, SessionMachine
from kvm_vdi_client.viewers import ViewerLaunch, ViewerNotInstalled, start_viewer

from tests.i18n.artefacts import artefact
from tests.services.xvfb import Xvfb
from tests.thin_client.launcher_ui import Ui
from tests.thin_client.scripted_broker import Certificates, ScriptedBroker
from tests.thin_client.test_machine import READY, RUNNING, viewing
from tests.thin_client.test_ui import LOGIN_OK, POOLS


@pytest.fixture
def lithuanian() -> Iterator[None]:
    assert i18n.set_language("lt") == "lt"
    yield
    i18n.set_language("en")


@pytest.fixture
def ui(
    xvfb: Xvfb, tmp_path: Path, broker: ScriptedBroker, certificates: Certificates, lithuanian: None
) -> Iterator[Ui]:
    client = BrokerClient(DashboardConfig(url=broker.url, ca_file=certificates.ca))
    env = {**xvfb.env, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    controller = Controller(SessionMachine(), client, ViewerConfig(kiosk=True), viewer_env=env)
    made = Ui(xvfb, controller)
    yield made
    controller.close()
    made.close()


def test_the_launcher_speaks_lithuanian_and_asks_the_dashboard_to(
    broker: ScriptedBroker, ui: Ui, xvfb: Xvfb
) -> None:
    broker.on("POST", "/login", LOGIN_OK)
    broker.on("GET", "/pools", (200, {}, POOLS))
    window = ui.window
    assert ui.root.title() == "Virtualus darbalaukis"
    assert window.login_button.cget("text") == "Prisijungti"

    ui.keys("Return")  # nothing typed: the launcher itself says what is missing
    assert window.login_notice.cget("text") == "Įveskite naudotojo vardą ir slaptažodį."

    ui.type("alice")
    ui.keys("Tab")
    ui.type("alice-pw")
    ui.keys("Return")
    ui.until(
        lambda: ui.controller.machine.phase is Phase.CHOOSING_POOL and bool(window.pool_tree.get_children()),
        "pools",
    )
    assert broker.calls("POST", "/login")[0].headers["Accept-Language"] == "lt"
    assert window.pool_tree.heading("free")["text"] == "Laisvi darbalaukiai"
    assert window.pool_tree.item("1")["values"] == ["3 iš 4", ""]
    assert window.pool_tree.item("2")["values"] == ["0 iš 2", "lab-07 (veikia)"]
    assert window.connect_button.cget("text") == "Prisijungti"
    assert window.logout_button.cget("text") == "Atsijungti"
    shot = xvfb.screenshot(artefact("i18n/launcher-lt.png"))
    assert shot.stat().st_size > 0


def test_what_the_launcher_says_on_its_own_after_a_mistake_or_a_lost_connection_is_lithuanian(
    broker: ScriptedBroker, certificates: Certificates, lithuanian: None
) -> None:
    """The messages the launcher words itself (not the dashboard's, which come in the language
    asked for): a wrong password, an unreachable dashboard, a viewer that is not installed, and
    the reconnecting after a lost connection."""
    broker.on("POST", "/login", (401, {}, {"error": "invalid_credentials", "message": "x"}))
    with pytest.raises(InvalidCredentials) as wrong:
        BrokerClient(DashboardConfig(url=broker.url, ca_file=certificates.ca)).login("alice", "nope")
    assert wrong.value.message == "Neteisingas naudotojo vardas arba slaptažodis."

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"https://127.0.0.1:{closed.getsockname()[1]}"
    with pytest.raises(BrokerUnreachable) as unreachable:
        BrokerClient(DashboardConfig(url=url, timeout=5)).login("alice", "alice-pw")
    assert unreachable.value.message == f"Valdymo skydelis adresu {url} atmetė ryšį (ar jis veikia?)."

    launch = ViewerLaunch(
        label=N_("SPICE viewer (remote-viewer)"), package="virt-viewer", argv=("no-such-viewer",)
    )
    with pytest.raises(ViewerNotInstalled) as missing:
        start_viewer(launch, env={"PATH": "/nonexistent"})
    assert str(missing.value).startswith("Šiame plonajame kliente neįdiegta: SPICE peržiūros programa")

    machine = viewing()
    for _ in range(MAX_RECONNECTS):
        machine.handle(ViewerExited(0))
        assert (
            machine.status
            == "Peržiūros programa užsidarė; tikrinama, ar veikia jūsų darbalaukis „office-03“…"
        )
        machine.handle(DesktopChecked(1, RUNNING))
        assert machine.status == "Ryšys nutrūko; jūsų darbalaukis „office-03“ jungiamas iš naujo…"
        machine.handle(DesktopAnswered(READY))
    machine.handle(ViewerExited(0))
    machine.handle(DesktopChecked(1, RUNNING))
    assert machine.error is not None
    assert machine.error.startswith(
        f"Ryšys nutrūko {MAX_RECONNECTS} kartus iš eilės (jūsų darbalaukis „office-03“)."
    )
