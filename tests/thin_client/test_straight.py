"""Straight to the desktop: the launcher opens the desktop of the pool the dashboard names
right after log-in, without a pool choice, and the pool list stays one action away."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kvm_vdi_client.config import KioskConfig
from kvm_vdi_client.events import (
    ChoosePoolRequested,
    DesktopAnswered,
    FetchPools,
    LoggedIn,
    LoginSubmitted,
    Phase,
    PoolsLoaded,
    RefreshRequested,
    RequestDesktop,
    Started,
    StartSpiceViewer,
)
from kvm_vdi_client.machine import SessionMachine
from kvm_vdi_client.model import (
    Desktop,
    DesktopBooting,
    DesktopReady,
    DesktopRefused,
    Lease,
    Pool,
    ProtocolError,
    SpiceConnection,
    User,
    parse_pools,
)

__all__ = ["ui_factory"]

# The launcher window on Xvfb against a scripted broker endpoint, as in test_ui.py.
from tests.thin_client.launcher_ui import Ui
from tests.thin_client.scripted_broker import Certificates, ScriptedBroker
from tests.thin_client.test_ui import LOGIN_OK, POOLS, ui_factory

ALICE = User("alice", "Alice Example", "local")
OFFICE = Pool(1, "Office", "", 4, 2, False, False, None, straight=True)
LAB = Pool(2, "Lab", "", 2, 0, False, False, Desktop(7, "lab-07", "running"))
CONNECTION = SpiceConnection("10.0.0.5", 5901, "spice-secret-pw", "http://ticket:tkt@gw:8443", "Office")
READY = DesktopReady(Lease("L1", "2026-01-01T00:00:00", 20.0), Desktop(3, "office-03", "running"), CONNECTION)


def answer(straight_to: object) -> dict[str, object]:
    pools = [
        {"id": 1, "name": "Office", "size": 4, "free": 2, "desktop": None},
        {"id": 2, "name": "Lab", "size": 2, "free": 0, "desktop": None},
    ]
    return {"pools": pools, "straight_to": straight_to}


def test_the_pool_the_dashboard_names_is_marked_and_an_older_dashboard_names_none() -> None:
    assert [pool.straight for pool in parse_pools(answer(2))] == [False, True]
    assert [pool.straight for pool in parse_pools(answer(None))] == [False, False]
    assert [pool.straight for pool in parse_pools({"pools": answer(None)["pools"]})] == [False, False]
    with pytest.raises(ProtocolError, match="straight_to"):
        parse_pools(answer("2"))


def logged_in(*pools: Pool, **options: object) -> tuple[SessionMachine, list[object]]:
    machine = SessionMachine(**options)  # type: ignore[arg-type]
    machine.handle(Started())
    machine.handle(LoginSubmitted("alice", "alice-pw"))
    assert machine.handle(LoggedIn(ALICE)) == [FetchPools()]
    return machine, list(machine.handle(PoolsLoaded(pools)))


def test_after_log_in_the_named_pool_is_requested_without_a_pool_choice() -> None:
    machine, effects = logged_in(OFFICE, LAB)
    assert effects == [RequestDesktop(1)]
    assert machine.phase is Phase.REQUESTING
    assert machine.status == "Opening your desktop in “Office”…"
    assert machine.can_choose_pool
    assert machine.handle(DesktopAnswered(READY))[0] == StartSpiceViewer(CONNECTION)
    assert machine.phase is Phase.VIEWING


def test_a_held_desktop_is_named_while_it_opens() -> None:
    held = Pool(2, "Lab", "", 2, 0, False, False, Desktop(7, "lab-07", "running"), straight=True)
    machine, effects = logged_in(Pool(1, "Office", "", 4, 2, False, False, None), held)
    assert effects == [RequestDesktop(2)]
    assert machine.status == "Opening your desktop “lab-07” in “Lab”…"


def test_without_a_named_pool_the_pool_list_is_shown() -> None:
    plain = Pool(1, "Office", "", 4, 2, False, False, None)
    machine, effects = logged_in(plain, LAB)
    assert effects == []
    assert machine.phase is Phase.CHOOSING_POOL


def test_the_pool_list_is_one_action_away_while_the_desktop_starts() -> None:
    machine, _ = logged_in(OFFICE, LAB)
    machine.handle(DesktopAnswered(DesktopBooting(2.0, Desktop(3, "office-03", "shutoff"))))
    assert machine.phase is Phase.BOOTING and machine.can_choose_pool
    assert machine.handle(ChoosePoolRequested()) == [FetchPools()]
    assert machine.phase is Phase.CHOOSING_POOL and not machine.can_choose_pool
    # The pool list does not send the user off again, nor does a late answer.
    assert machine.handle(PoolsLoaded((OFFICE, LAB))) == []
    assert machine.handle(DesktopAnswered(READY)) == []
    assert machine.handle(RefreshRequested()) == [FetchPools()]
    assert machine.handle(PoolsLoaded((OFFICE, LAB))) == []
    assert machine.phase is Phase.CHOOSING_POOL


def test_a_refused_desktop_leaves_the_user_on_the_pool_list_with_the_reason() -> None:
    machine, _ = logged_in(OFFICE, LAB)
    assert machine.handle(DesktopAnswered(DesktopRefused("no_free_desktop", "Office is full."))) == [
        FetchPools()
    ]
    assert machine.phase is Phase.CHOOSING_POOL and machine.notice == "Office is full."
    assert machine.handle(PoolsLoaded((OFFICE, LAB))) == []


def test_a_kiosk_pool_goes_before_the_dashboards_choice() -> None:
    _, effects = logged_in(OFFICE, LAB, kiosk=KioskConfig(pool="Lab"))
    assert effects == [RequestDesktop(2)]


def test_choosing_the_pool_list_is_ignored_when_nothing_is_being_requested() -> None:
    plain = Pool(1, "Office", "", 4, 2, False, False, None)
    machine, _ = logged_in(plain)
    assert not machine.can_choose_pool
    assert machine.handle(ChoosePoolRequested()) == []


def test_the_launcher_opens_the_named_pool_at_once_and_enter_goes_to_the_pool_list(
    broker: ScriptedBroker, certificates: Certificates, ui_factory: Callable[..., Ui]
) -> None:
    pools = {**POOLS, "straight_to": 1}
    broker.on("POST", "/login", LOGIN_OK)
    broker.on("GET", "/pools", (200, {}, pools))
    booting = {"status": "booting", "retry_after": 30, "desktop": {"vm_id": 3, "name": "office-03"}}
    broker.on("POST", "/pools/1/desktop", (202, {"Retry-After": "30"}, booting))
    ui = ui_factory(broker, certificates)
    window = ui.window
    ui.type("alice")
    ui.keys("Tab")
    ui.type("alice-pw")
    ui.keys("Return")
    ui.until(lambda: len(broker.calls("POST", "/pools/1/desktop")) == 1, "desktop requested at once")
    ui.until(lambda: ui.controller.machine.phase is Phase.BOOTING, "desktop starting")
    ui.until(
        lambda: window.status_label.cget("text").startswith("Starting your desktop “office-03”"), "status"
    )
    assert window.pool_tree.get_children() == ()  # the pool list was never shown
    assert window.pools_button.winfo_ismapped()
    assert ui.focused() is window.pools_button
    ui.keys("Return")
    ui.until(lambda: bool(window.pool_tree.get_children()), "pool list shown")
    assert ui.controller.machine.phase is Phase.CHOOSING_POOL
    assert ui.focused() is window.pool_tree
    assert len(broker.calls("POST", "/pools/1/desktop")) == 1
