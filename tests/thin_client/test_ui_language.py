"""The launcher in Lithuanian on a real (virtual) X display: its own words, and the dashboard
asked for its messages in the same language (a screenshot is kept as a test artefact)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvm_vdi_client import i18n
from kvm_vdi_client.api import BrokerClient
from kvm_vdi_client.config import DashboardConfig, ViewerConfig
from kvm_vdi_client.controller import Controller
from kvm_vdi_client.events import Phase
from kvm_vdi_client.machine import SessionMachine

from tests.i18n.artefacts import artefact
from tests.services.xvfb import Xvfb
from tests.thin_client.launcher_ui import Ui
from tests.thin_client.scripted_broker import Certificates, ScriptedBroker
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
