"""The Tk launcher window on a real (virtual) X display, used with the keyboard only.

Keys are typed with xdotool into Xvfb, as a user at a thin client would; the
window talks to a scripted HTTPS endpoint and starts stand-in viewers.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kvm_vdi_client.api import BrokerClient
from kvm_vdi_client.config import DashboardConfig, ViewerConfig
from kvm_vdi_client.controller import Controller
from kvm_vdi_client.events import Phase
from kvm_vdi_client.machine import SessionMachine

from tests.services.xvfb import Xvfb
from tests.thin_client.launcher_ui import Ui
from tests.thin_client.scripted_broker import Answer, Certificates, ScriptedBroker

LOGIN_OK: Answer = (
    200,
    {},
    {"token": "tok-ui", "user": {"username": "alice", "display_name": "Alice Example"}},
)
POOLS = {
    "pools": [
        {"id": 1, "name": "Office", "description": "Office desktops", "size": 4, "free": 3, "desktop": None},
        {
            "id": 2,
            "name": "Lab",
            "description": "Lab machines",
            "size": 2,
            "free": 0,
            "desktop": {"vm_id": 7, "name": "lab-07", "state": "running"},
        },
    ]
}


@pytest.fixture
def ui_factory(xvfb: Xvfb, tmp_path: Path) -> Iterator[Callable[[ScriptedBroker, Certificates], Ui]]:
    made: list[Ui] = []

    def make(broker: ScriptedBroker, certificates: Certificates) -> Ui:
        client = BrokerClient(DashboardConfig(url=broker.url, ca_file=certificates.ca))
        env = {**xvfb.env, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
        controller = Controller(SessionMachine(), client, ViewerConfig(kiosk=True), viewer_env=env)
        ui = Ui(xvfb, controller)
        made.append(ui)
        return ui

    yield make
    for ui in made:
        ui.controller.close()
        ui.close()
    # Tk objects must be freed on the thread that made them: collect their cycles here, now,
    # rather than whenever a garbage collection happens to run on a worker thread.
    made.clear()
    gc.collect()


def test_log_in_choose_a_pool_with_the_arrow_keys_and_connect_with_enter(
    broker: ScriptedBroker, certificates: Certificates, ui_factory: Callable[..., Ui], tmp_path: Path
) -> None:
    broker.on("POST", "/login", LOGIN_OK)
    broker.on("GET", "/pools", (200, {}, POOLS))
    broker.on("POST", "/pools/2/desktop", (409, {}, {"error": "no_free_desktop", "message": "Lab is full."}))
    ui = ui_factory(broker, certificates)
    window = ui.window

    assert ui.focused() is window.username_entry
    ui.type("alice")
    ui.keys("Tab")
    assert ui.focused() is window.password_entry
    ui.type("alice-pw")
    ui.keys("Return")
    ui.until(
        lambda: ui.controller.machine.phase is Phase.CHOOSING_POOL and bool(window.pool_tree.get_children()),
        "pools",
    )
    assert broker.calls("POST", "/login")[0].body == {"username": "alice", "password": "alice-pw"}
    assert window.password_entry.get() == ""  # the typed password does not stay in the widget
    assert window.user_label.cget("text") == "Alice Example"

    assert ui.focused() is window.pool_tree
    assert window.pool_tree.item("1")["values"] == ["3 of 4", ""]
    assert window.pool_tree.item("2")["values"] == ["0 of 2", "lab-07 (running)"]
    assert window.selected_pool() is not None and window.selected_pool().name == "Office"  # type: ignore[union-attr]
    ui.keys("Down")
    assert window.selected_pool().name == "Lab"  # type: ignore[union-attr]
    assert window.pool_description.cget("text") == "Lab machines"
    ui.keys("Return")
    ui.until(lambda: len(broker.calls("POST", "/pools/2/desktop")) == 1, "desktop requested")
    ui.until(lambda: window.pool_notice.cget("text") == "Lab is full.", "refusal shown")


def test_force_off_asks_first_naming_the_desktop_and_works_from_the_keyboard(
    broker: ScriptedBroker, certificates: Certificates, ui_factory: Callable[..., Ui]
) -> None:
    broker.on("POST", "/login", LOGIN_OK)
    broker.on("GET", "/pools", (200, {}, POOLS))
    broker.on("POST", "/desktops/7/power", (202, {}, {"state": "shutoff"}))
    ui = ui_factory(broker, certificates)
    window = ui.window
    ui.type("alice")
    ui.keys("Tab")
    ui.type("alice-pw")
    ui.keys("Return")
    ui.until(lambda: bool(window.pool_tree.get_children()), "pools")
    ui.keys("Down")  # Lab, which holds the user's desktop lab-07

    # Tab order: pool list -> Connect -> Refresh -> Shut down -> Force off.
    ui.keys("Tab", "Tab", "Tab", "Tab")
    assert ui.focused() is window.poweroff_button
    ui.keys("Return")
    assert window.confirm_frame.winfo_ismapped()
    assert "lab-07" in window.confirm_label.cget("text") and "unsaved work" in window.confirm_label.cget(
        "text"
    )
    assert ui.focused() is window.confirm_no  # the safe choice has the focus
    ui.keys("Escape")
    assert not window.confirm_frame.winfo_ismapped()
    assert broker.calls("POST", "/desktops/7/power") == []

    ui.keys("Tab", "Tab", "Tab", "Tab", "Return")
    ui.keys("shift+Tab")
    assert ui.focused() is window.confirm_yes
    ui.keys("Return")
    ui.until(lambda: len(broker.calls("POST", "/desktops/7/power")) == 1, "power sent")
    assert broker.calls("POST", "/desktops/7/power")[0].body == {"action": "poweroff"}
    ui.until(lambda: "Force off sent to “lab-07”" in window.pool_notice.cget("text"), "confirmation shown")
