"""The launcher's broker API client: TLS checks, the bearer token, status codes, readable failures."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator

import pytest
from kvm_vdi_client.api import (
    BrokerClient,
    BrokerError,
    BrokerUnreachable,
    InvalidCredentials,
    LeaseEnded,
    NotAuthenticated,
    Throttled,
)
from kvm_vdi_client.config import DashboardConfig
from kvm_vdi_client.model import (
    DesktopBooting,
    DesktopReady,
    DesktopRefused,
    FailoverOffered,
    ProtocolError,
    RdpFailover,
)

from tests.thin_client.scripted_broker import Answer, Certificates, ScriptedBroker

LOGIN_OK: Answer = (
    200,
    {},
    {"token": "tok-abc", "expires_at": "2030-01-01T00:00:00", "user": {"username": "alice"}},
)
READY = {
    "status": "ready",
    "lease": {"id": 41, "expires_at": "2030-01-01T00:00:00", "heartbeat_interval": 15},
    "desktop": {"vm_id": 9, "name": "office-09", "state": "running"},
    "connection": {
        "protocol": "spice",
        "host": "10.1.0.3",
        "port": 5909,
        "password": "spw",
        "ticket": "tkt",
        "proxy": "http://ticket:tkt@127.0.0.1:3128",
        "title": "office-09",
        "vv": "[virt-viewer]\n",
        "console_url": "/console/9",
    },
}


def client_for(broker: ScriptedBroker, certificates: Certificates, **options: object) -> BrokerClient:
    return BrokerClient(DashboardConfig(url=broker.url, ca_file=certificates.ca, **options))  # type: ignore[arg-type]


def logged_in(broker: ScriptedBroker, certificates: Certificates) -> BrokerClient:
    broker.on("POST", "/login", LOGIN_OK)
    client = client_for(broker, certificates)
    client.login("alice", "alice-pw")
    return client


def test_login_over_verified_tls_keeps_the_token_in_a_header_not_the_url(
    broker: ScriptedBroker, certificates: Certificates
) -> None:
    broker.on("GET", "/pools", (200, {}, {"pools": [{"id": 1, "name": "Office", "size": 3, "free": 1}]}))
    client = logged_in(broker, certificates)
    (login,) = broker.calls("POST", "/login")
    assert login.body == {"username": "alice", "password": "alice-pw"}
    pools = client.pools()
    assert [(p.id, p.name, p.free, p.size) for p in pools] == [(1, "Office", 1, 3)]
    (listing,) = broker.calls("GET", "/pools")
    assert listing.headers["Authorization"] == "Bearer tok-abc"
    assert all("tok-abc" not in r.path and "alice-pw" not in r.path for r in broker.requests)


def test_a_certificate_from_an_unknown_ca_is_refused_with_advice(broker: ScriptedBroker) -> None:
    client = BrokerClient(DashboardConfig(url=broker.url))  # system CA store only
    with pytest.raises(BrokerUnreachable) as caught:
        client.login("alice", "alice-pw")
    assert "could not be verified" in caught.value.message
    assert "dashboard.ca_file" in caught.value.message
    assert broker.requests == []  # nothing, not even the password, was sent


def test_a_certificate_for_another_host_name_is_refused(
    broker: ScriptedBroker, certificates: Certificates
) -> None:
    port = broker.url.rsplit(":", 1)[1]
    client = BrokerClient(DashboardConfig(url=f"https://localhost:{port}", ca_file=certificates.ca))
    with pytest.raises(BrokerUnreachable, match="could not be verified"):
        client.login("alice", "alice-pw")
    assert broker.requests == []


def test_disabling_certificate_checks_works_and_is_logged_loudly(
    broker: ScriptedBroker, caplog: pytest.LogCaptureFixture
) -> None:
    broker.on("POST", "/login", LOGIN_OK)
    with caplog.at_level(logging.WARNING):
        client = BrokerClient(DashboardConfig(url=broker.url, verify=False))
    assert any("TLS CERTIFICATE CHECKS ARE DISABLED" in r.getMessage() for r in caplog.records)
    assert client.login("alice", "alice-pw").username == "alice"


def test_plain_http_only_when_the_url_says_so_and_with_a_warning(
    plain_broker: ScriptedBroker, caplog: pytest.LogCaptureFixture
) -> None:
    plain_broker.on("POST", "/login", LOGIN_OK)
    with caplog.at_level(logging.WARNING):
        client = BrokerClient(DashboardConfig(url=plain_broker.url))
    assert any("plain http" in r.getMessage() for r in caplog.records)
    assert client.login("alice", "alice-pw").username == "alice"


def test_an_https_url_never_falls_back_to_plain_http(plain_broker: ScriptedBroker) -> None:
    client = BrokerClient(DashboardConfig(url=plain_broker.url.replace("http://", "https://")))
    with pytest.raises(BrokerUnreachable, match="secure connection"):
        client.login("alice", "alice-pw")


def test_a_stopped_dashboard_is_reported_as_refusing_connections() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = BrokerClient(DashboardConfig(url=f"https://127.0.0.1:{port}"))
    with pytest.raises(BrokerUnreachable) as caught:
        client.login("alice", "alice-pw")
    assert (
        caught.value.message
        == f"The dashboard at https://127.0.0.1:{port} refused the connection (is it running?)."
    )


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    server.close()


def test_a_dashboard_that_does_not_answer_times_out_with_a_message(silent_server: int) -> None:
    client = BrokerClient(DashboardConfig(url=f"http://127.0.0.1:{silent_server}", timeout=1))
    with pytest.raises(BrokerUnreachable, match="did not answer within 1 s"):
        client.login("alice", "alice-pw")


def test_wrong_password_and_throttling(broker: ScriptedBroker, certificates: Certificates) -> None:
    broker.on(
        "POST",
        "/login",
        (401, {}, {"error": "invalid_credentials", "message": "Wrong user name or password."}),
        (429, {"Retry-After": "30"}, {"error": "throttled", "message": "Too many attempts."}),
    )
    client = client_for(broker, certificates)
    with pytest.raises(InvalidCredentials):
        client.login("alice", "nope")
    with pytest.raises(Throttled) as caught:
        client.login("alice", "nope")
    assert caught.value.retry_after == 30


def test_desktop_request_answers(broker: ScriptedBroker, certificates: Certificates) -> None:
    starting = {"vm_id": 9, "name": "d9", "state": "starting"}
    full = {
        "error": "no_free_desktop",
        "message": "Pool full.",
        "failover": {"protocol": "rdp", "host": "rdp.example"},
    }
    broker.on(
        "POST",
        "/pools/3/desktop",
        (202, {}, {"status": "booting", "retry_after": 2, "desktop": starting}),
        (200, {}, READY),
        (409, {}, full),
        (409, {}, {"error": "maintenance", "message": "Pool in maintenance."}),
        (403, {}, {"error": "not_allowed", "message": "You may not use this pool."}),
    )
    client = logged_in(broker, certificates)
    booting = client.request_desktop(3)
    assert isinstance(booting, DesktopBooting) and booting.retry_after == 2.0
    ready = client.request_desktop(3)
    assert isinstance(ready, DesktopReady)
    assert (ready.lease.id, ready.lease.heartbeat_interval) == ("41", 15.0)
    assert (ready.connection.host, ready.connection.port, ready.connection.password) == (
        "10.1.0.3",
        5909,
        "spw",
    )
    assert ready.connection.proxy == "http://ticket:tkt@127.0.0.1:3128"
    failover = client.request_desktop(3)
    assert failover == FailoverOffered(RdpFailover("rdp.example"), reason="Pool full.")
    assert client.request_desktop(3) == DesktopRefused("maintenance", "Pool in maintenance.")
    with pytest.raises(BrokerError) as caught:
        client.request_desktop(3)
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        403,
        "not_allowed",
        "You may not use this pool.",
    )


def test_heartbeat_release_power_and_an_expired_token(
    broker: ScriptedBroker, certificates: Certificates
) -> None:
    broker.on(
        "POST", "/leases/41/heartbeat", (200, {}, {"expires_at": "x"}), (410, {}, {"error": "lease_ended"})
    )
    broker.on("POST", "/leases/41/release", (404, {}, {"error": "lease_not_found"}))
    broker.on("POST", "/desktops/9/power", (202, {}, {"state": "shutting down"}))
    broker.on("GET", "/pools", (401, {}, {"error": "not_authenticated"}))
    client = logged_in(broker, certificates)
    assert client.heartbeat("41") == "x"
    with pytest.raises(LeaseEnded):
        client.heartbeat("41")
    client.release("41")  # already gone counts as released
    assert client.power(9, "shutdown") == "shutting down"
    assert broker.calls("POST", "/desktops/9/power")[0].body == {"action": "shutdown"}
    with pytest.raises(NotAuthenticated, match="log in again"):
        client.pools()


def test_an_answer_that_is_not_the_api_is_a_readable_protocol_error(
    broker: ScriptedBroker, certificates: Certificates
) -> None:
    broker.on("POST", "/login", (200, {}, b"<html>captive portal</html>"))
    with pytest.raises(ProtocolError, match=r"not JSON; is dashboard\.url the dashboard's address"):
        client_for(broker, certificates).login("alice", "alice-pw")
    broker.on("POST", "/login", (200, {}, {"token": "t", "user": {"username": "alice"}}))
    broker.on("GET", "/pools", (200, {}, {"pools": [{"name": "no id"}]}))
    client = client_for(broker, certificates)
    client.login("alice", "alice-pw")
    with pytest.raises(ProtocolError, match=r"pools\[0\]\.id missing or invalid"):
        client.pools()
