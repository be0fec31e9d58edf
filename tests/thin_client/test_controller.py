"""The controller carrying out the machine's effects: real HTTPS calls, real viewer processes, no display."""

from __future__ import annotations

import configparser
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kvm_vdi_client.api import BrokerClient
from kvm_vdi_client.config import BootingConfig, DashboardConfig, ViewerConfig
from kvm_vdi_client.controller import Controller
from kvm_vdi_client.events import LoginSubmitted, Phase, PoolChosen, RetryRequested, Started
from kvm_vdi_client.machine import SessionMachine

from tests.thin_client.scripted_broker import Answer, Certificates, ScriptedBroker, start_broker, stop_broker
from tests.thin_client.standins import StandInViewer

LOGIN_OK: Answer = (200, {}, {"token": "tok-1", "user": {"username": "alice", "display_name": "Alice"}})
POOLS: Answer = (200, {}, {"pools": [{"id": 3, "name": "Office", "size": 2, "free": 1}]})
READY = {
    "status": "ready",
    "lease": {"id": "L-7", "expires_at": "2030-01-01T00:00:00", "heartbeat_interval": 0.5},
    "desktop": {"vm_id": 9, "name": "office-09", "state": "running"},
    "connection": {
        "protocol": "spice",
        "host": "10.1.0.3",
        "port": 5909,
        "password": "spice-pw-7",
        "proxy": "http://ticket:tkt-7@127.0.0.1:3128",
        "title": "office-09",
    },
}


def drive(controller: Controller, until: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    """Pump the controller until ``until()`` holds; fail with the session's state if it never does."""
    deadline = time.monotonic() + limit
    while not until():
        machine = controller.machine
        assert time.monotonic() < deadline, f"{what}: phase {machine.phase}, error {machine.error!r}"
        controller.pump(0.05)


@pytest.fixture
def make_controller(tmp_path: Path) -> Iterator[Callable[..., Controller]]:
    made: list[Controller] = []

    def make(url: str, certificates: Certificates | None, *, path: str | None = None) -> Controller:
        machine = SessionMachine(booting=BootingConfig(max_attempts=5, max_wait=30, min_retry=0.2))
        client = BrokerClient(DashboardConfig(url=url, ca_file=certificates.ca if certificates else None))
        env = {**os.environ, "PATH": path if path is not None else f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
        controller = Controller(machine, client, ViewerConfig(kiosk=True), viewer_env=env)
        made.append(controller)
        return controller

    yield make
    for controller in made:
        controller.close()


def test_a_session_boots_views_heartbeats_and_releases_through_real_calls(
    broker: ScriptedBroker,
    certificates: Certificates,
    make_controller: Callable[..., Controller],
    tmp_path: Path,
) -> None:
    broker.on("POST", "/login", LOGIN_OK)
    broker.on("GET", "/pools", POOLS)
    broker.on(
        "POST", "/pools/3/desktop", (202, {}, {"status": "booting", "retry_after": 0.2}), (200, {}, READY)
    )
    broker.on("POST", "/leases/L-7/heartbeat", (200, {}, {"expires_at": "2030-01-01T00:00:10"}))
    broker.on("POST", "/leases/L-7/release", (204, {}, None))
    broker.on("POST", "/logout", (204, {}, None))
    viewer = StandInViewer(tmp_path / "bin", "remote-viewer")
    controller = make_controller(broker.url, certificates)

    controller.dispatch(Started())
    controller.dispatch(LoginSubmitted("alice", "alice-pw"))
    drive(controller, lambda: controller.machine.pools is not None, "pools listed")
    controller.dispatch(PoolChosen(3))
    drive(controller, lambda: viewer.started, "viewer started")
    assert controller.machine.phase is Phase.VIEWING
    assert len(broker.calls("POST", "/pools/3/desktop")) == 2  # booting, then ready

    drive(controller, lambda: len(broker.calls("POST", "/leases/L-7/heartbeat")) >= 2, "two heartbeats")
    viewer.close()
    drive(controller, lambda: controller.machine.phase is Phase.LOGGED_OUT, "session ended")

    assert len(broker.calls("POST", "/leases/L-7/release")) == 1
    drive(controller, lambda: len(broker.calls("POST", "/logout")) == 1, "token revoked")
    record = viewer.record()
    assert record["argv"][1:] == ["--kiosk", "--kiosk-quit", "on-disconnect", "-"]
    vv = configparser.ConfigParser(interpolation=None)
    vv.read_string(record["stdin"])
    assert vv["virt-viewer"]["password"] == "spice-pw-7"
    assert vv["virt-viewer"]["proxy"] == "http://ticket:tkt-7@127.0.0.1:3128"
    assert not any("spice-pw-7" in arg or "tkt-7" in arg for arg in record["argv"])


def test_an_unreachable_dashboard_becomes_a_message_and_a_retry_not_a_traceback(
    certificates: Certificates, make_controller: Callable[..., Controller], caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"https://127.0.0.1:{port}"
    controller = make_controller(url, certificates)
    with caplog.at_level(logging.DEBUG):
        controller.dispatch(LoginSubmitted("alice", "alice-pw"))
        drive(controller, lambda: controller.machine.phase is Phase.ERROR, "error shown")
    machine = controller.machine
    assert machine.error == f"The dashboard at {url} refused the connection (is it running?)."
    assert machine.can_retry
    assert not any(record.exc_info for record in caplog.records)
    assert all("alice-pw" not in record.getMessage() for record in caplog.records)

    # The dashboard comes (back) up on that address; Retry carries on from where it failed.
    broker = start_broker(certificates, port=port)
    try:
        broker.on("POST", "/login", LOGIN_OK)
        broker.on("GET", "/pools", POOLS)
        controller.dispatch(RetryRequested())
        drive(controller, lambda: controller.machine.pools is not None, "pools after retry")
        assert machine.phase is Phase.CHOOSING_POOL
        assert machine.user is not None and machine.user.display_name == "Alice"
    finally:
        stop_broker(broker)


def test_a_missing_remote_viewer_releases_the_desktop_and_says_what_to_install(
    broker: ScriptedBroker,
    certificates: Certificates,
    make_controller: Callable[..., Controller],
    tmp_path: Path,
) -> None:
    broker.on("POST", "/login", LOGIN_OK)
    broker.on("GET", "/pools", POOLS)
    broker.on("POST", "/pools/3/desktop", (200, {}, READY))
    broker.on("POST", "/leases/L-7/release", (204, {}, None))
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    controller = make_controller(broker.url, certificates, path=str(empty))
    controller.dispatch(LoginSubmitted("alice", "alice-pw"))
    drive(controller, lambda: controller.machine.pools is not None, "pools listed")
    controller.dispatch(PoolChosen(3))
    drive(controller, lambda: controller.machine.phase is Phase.ERROR, "error shown")
    assert controller.machine.error == (
        "The SPICE viewer (remote-viewer) is not installed on this thin client "
        "(program 'remote-viewer' not found; install virt-viewer)."
    )
    assert len(broker.calls("POST", "/leases/L-7/release")) == 1


def test_a_full_pool_fails_over_to_rdp_with_the_password_on_stdin_only(
    broker: ScriptedBroker,
    certificates: Certificates,
    make_controller: Callable[..., Controller],
    tmp_path: Path,
) -> None:
    broker.on("POST", "/login", LOGIN_OK)
    broker.on("GET", "/pools", POOLS)
    failover = {"protocol": "rdp", "host": "rdp.example.org", "domain": "EXAMPLE"}
    broker.on(
        "POST",
        "/pools/3/desktop",
        (409, {}, {"error": "no_free_desktop", "message": "No free desktop.", "failover": failover}),
    )
    rdp = StandInViewer(tmp_path / "bin", "xfreerdp")
    controller = make_controller(broker.url, certificates)
    controller.dispatch(LoginSubmitted("alice", "alice-pw"))
    drive(controller, lambda: controller.machine.pools is not None, "pools listed")
    controller.dispatch(PoolChosen(3))
    drive(controller, lambda: rdp.started, "RDP viewer started")
    assert controller.machine.phase is Phase.FAILOVER
    record = rdp.record()
    assert record["argv"][1:] == [
        "/f", "/v:rdp.example.org", "/d:EXAMPLE", "/u:alice", "/from-stdin:force", "/cert:deny"
    ]  # fmt: skip
    assert record["stdin"] == "alice-pw\n"
    rdp.close()
    drive(controller, lambda: controller.machine.phase is Phase.LOGGED_OUT, "back to the login screen")
