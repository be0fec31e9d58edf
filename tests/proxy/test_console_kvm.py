"""Consoles of a real desktop: the banner guest under qemu on the test hypervisor h1 (a
network namespace of its own), reached through the dashboard's websocket bridge (headless
Chromium with spice-html5) and its CONNECT gateway (remote-viewer under Xvfb), with real
SPICE passwords, over SPICE's TLS port only. A capture on h1's side of both sessions holds
no SPICE link in clear."""

from __future__ import annotations

import asyncio
import base64
import configparser
import contextlib
import functools
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from app import db as database
from app.clock import utcnow
from app.db.schema import console_tickets, hypervisors, vms
from app.hyper import Hypervisor
from app.hyper.sshkeys import ensure_dashboard_key
from app.proxy.wsprotocol import DashboardWebSocketProtocol
from tests.broker.portal_steps import wait_until
from tests.dashboard import BrowserLikeClient, RunningDashboard, make_settings, start_dashboard
from tests.hyper.conftest import row_values, ssh_record
from tests.proxy.spice_client import (
    LINK_PERMISSION_DENIED,
    TcpStream,
    WebSocketStream,
    connect_through_gateway,
    spice_link,
    spice_login_tls,
)
from tests.services import guests
from tests.services.browser import BrowserFactory
from tests.services.capture import PacketCapture
from tests.services.guests import GuestImages
from tests.services.libvirt_host import LibvirtHost
from tests.services.process import spawn, stop_process
from tests.services.rundir import RunDir
from tests.services.xvfb import Xvfb
from tests.waiting import eventually

pytestmark = [pytest.mark.kvm]

DOMAIN = "console-banner"
INITIAL_PASSWORD = "initial-never-valid"


def banner_domain_xml(disk: Path, listen: str) -> str:
    """The banner guest as the VM layer must define desktops: SPICE over TLS only, with a password
    that is already expired (``passwdValidTo`` in the past), so the display never accepts anyone
    until the dashboard sets a fresh password for one console."""
    xml = guests.domain_xml(
        DOMAIN, disk, virt_type=guests.FAST_VIRT_TYPE, spice_listen=listen, spice_password=INITIAL_PASSWORD
    )
    xml = xml.replace("defaultMode='insecure'", "defaultMode='secure'", 1)
    return xml.replace("<graphics ", "<graphics passwdValidTo='1970-01-01T00:00:00' ", 1)


@dataclass
class KvmConsole:
    dashboard: RunningDashboard
    host: LibvirtHost
    hypervisor_id: int
    vm_id: int
    admin: BrowserLikeClient

    @property
    def hv(self) -> Hypervisor:
        return self.dashboard.services.hypervisors.get(self.hypervisor_id)

    async def ensure_running(self) -> None:
        if await self.hv.domain_state(DOMAIN) != "running":
            await self.hv.start(DOMAIN)
        await wait_for_banner(self.hv)

    async def open(self) -> dict[str, Any]:
        """POST /vms/{id}/console as the admin: the JSON grant plus the ticket from its cookie."""
        response = await self.admin.post(
            f"/vms/{self.vm_id}/console", json={}, headers={"Accept": "application/json"}
        )
        assert response.status_code == 200, response.text
        cookie = SimpleCookie()
        cookie.load(response.headers["set-cookie"])
        return {**response.json(), "ticket": cookie["kvmvdi_console"].value, "cookie": cookie}

    async def vv(self, query: str = "") -> dict[str, str]:
        response = await self.admin.post(f"/vms/{self.vm_id}/console.vv{query}")
        assert response.status_code == 200, response.text
        parser = configparser.ConfigParser(interpolation=None)
        parser.read_string(response.text)
        return dict(parser["virt-viewer"])


async def wait_for_banner(hv: Hypervisor, timeout: float = 90) -> guests.Screen:
    async def banner() -> guests.Screen | None:
        screen = guests.decode_image(await hv.screenshot_png(DOMAIN, max_width=720))
        return screen if screen.fraction(guests.BLUE) > 0.5 else None

    return await eventually(banner, "the banner on the desktop's screen", timeout=timeout)


@pytest.fixture(scope="module")
async def kvm_console(
    second_hypervisor: LibvirtHost, guest_images: GuestImages, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[KvmConsole]:
    """A dashboard managing h1 over SSH, with the banner desktop defined there as VM 1. h1 has a
    network namespace of its own, so a capture there sees exactly the dashboard-to-hypervisor path."""
    hypervisor_host = second_hypervisor
    root = tmp_path_factory.mktemp("console-kvm")
    url = f"sqlite:///{root / 'vdi.sqlite3'}"
    settings = make_settings(root / "var", url)
    # The key the lifespan would create, made beforehand so h0 can trust it.
    key = await asyncio.to_thread(ensure_dashboard_key, settings.data_dir / "ssh")
    hypervisor_host.authorize(key.public_line)
    disk = guest_images.overlay("banner", hypervisor_host.images_dir / f"{DOMAIN}.qcow2")
    await asyncio.to_thread(database.upgrade, url)
    db = database.connect_database(url)
    await db.connect()
    try:
        hv_id = int(
            await db.execute(
                hypervisors.insert().values(**row_values(ssh_record(hypervisor_host, name="h1-consoles")))
            )
        )
        vm_id = int(
            await db.execute(
                vms.insert().values(
                    name=DOMAIN, hypervisor_id=hv_id, kind="simple", disk_path=str(disk), created_at=utcnow()
                )
            )
        )
    finally:
        await db.disconnect()
    dashboard = await start_dashboard(settings)
    try:
        admin = await dashboard.admin()
        world = KvmConsole(dashboard, hypervisor_host, hv_id, vm_id, admin)
        await world.hv.define(banner_domain_xml(disk, hypervisor_host.spice_listen))
        yield world
    finally:
        await dashboard.stop()
        hypervisor_host.virsh("destroy", DOMAIN, check=False)
        hypervisor_host.virsh("undefine", DOMAIN, check=False)
        disk.unlink(missing_ok=True)


@pytest.fixture
async def desktop(kvm_console: KvmConsole) -> KvmConsole:
    """The running banner desktop, with no console of an earlier test still open."""
    await kvm_console.ensure_running()
    sessions = kvm_console.dashboard.services.consoles.sessions
    await eventually(lambda: not sessions.sessions(), "the earlier tests' consoles closed")
    return kvm_console


async def spice_endpoint(world: KvmConsole) -> tuple[str, int]:
    """The display's host and TLS port: the desktop offers no plain port."""
    endpoint = await world.hv.spice_endpoint(DOMAIN)
    assert endpoint.port is None and endpoint.tls_port is not None
    return endpoint.host, endpoint.tls_port


def display_ca(world: KvmConsole) -> str:
    return world.dashboard.services.hypervisors.spice_tls.ca.pem


def display_tls(world: KvmConsole) -> ssl.SSLContext:
    """A client trusting the dashboard's CA (as remote-viewer does with the .vv file's ``ca``)."""
    return world.dashboard.services.hypervisors.spice_tls.ca.client_context()


async def spice_login(world: KvmConsole, host: str, port: int, password: str) -> int:
    return await asyncio.to_thread(spice_login_tls, host, port, password, display_tls(world))


async def test_a_freshly_started_desktop_accepts_no_password_until_a_console_is_opened(
    kvm_console: KvmConsole,
) -> None:
    if await kvm_console.hv.domain_state(DOMAIN) == "running":
        await kvm_console.hv.destroy(DOMAIN)
    await kvm_console.hv.start(DOMAIN)
    host, port = await spice_endpoint(kvm_console)
    assert await spice_login(kvm_console, host, port, "") == LINK_PERMISSION_DENIED
    assert await spice_login(kvm_console, host, port, INITIAL_PASSWORD) == LINK_PERMISSION_DENIED
    grant = await kvm_console.open()
    assert await spice_login(kvm_console, host, port, grant["password"]) == 0


async def test_an_opened_console_links_through_the_websocket_and_the_gateway_and_an_old_password_fails(
    desktop: KvmConsole,
) -> None:
    host, port = await spice_endpoint(desktop)
    first = await desktop.open()
    cookie = first["cookie"]["kvmvdi_console"]
    assert cookie["path"] == f"/console/ws/{desktop.vm_id}"
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "strict"
    assert cookie["max-age"] == "60"
    assert first["websocket_path"] == f"/console/ws/{desktop.vm_id}"
    # The JSON answer has the password; the ticket is only in the HttpOnly cookie.
    assert set(first) - {"ticket", "cookie"} == {
        "vm",
        "password",
        "websocket_path",
        "expires_at",
        "password_valid_until",
    }

    def through_websocket(ticket: str, password: str) -> Any:
        ws_url = desktop.dashboard.url.replace("http://", "ws://") + first["websocket_path"]
        stream = WebSocketStream.open(ws_url, cookie=f"kvmvdi_console={ticket}", origin=desktop.dashboard.url)
        try:
            return spice_link(stream, password)
        finally:
            stream.close()

    linked = await asyncio.to_thread(through_websocket, first["ticket"], first["password"])
    assert linked.ok, linked

    vv = await desktop.vv()
    proxy = urlsplit(vv["proxy"])
    assert (vv["host"], int(vv["tls-port"])) == (host, port)
    assert "port" not in vv, "no plain port"
    assert vv["host-subject"] == f"CN={host}"
    assert vv["ca"].replace("\\n", "\n").strip() == display_ca(desktop).strip()
    assert proxy.username == "ticket"
    assert proxy.password is not None

    def through_gateway(password: str) -> Any:
        answer, plain = connect_through_gateway(
            (proxy.hostname or "", proxy.port or 0), f"{vv['host']}:{vv['tls-port']}", ticket=proxy.password
        )
        assert answer.status == 200, answer.head
        # Through the gateway the TLS session runs between the client and qemu.
        stream = plain.start_tls(display_tls(desktop), vv["host"])
        try:
            return spice_link(stream, password)
        finally:
            stream.close()

    linked = await asyncio.to_thread(through_gateway, vv["password"])
    assert linked.ok, linked
    # Fetching the .vv opened a console of its own, in the same password epoch: the first
    # console still opens new channels.
    assert vv["password"] == first["password"]
    linked = await asyncio.to_thread(through_websocket, first["ticket"], first["password"])
    assert linked.ok, linked

    # The hypervisor's SSH port is not reachable with this ticket.
    answer, stream = await asyncio.to_thread(
        connect_through_gateway,
        (proxy.hostname or "", proxy.port or 0),
        f"{desktop.host.ssh_address}:{desktop.host.ssh_port}",
        ticket=proxy.password,
    )
    stream.close()
    assert answer.status == 403

    # Neither password nor ticket reached the database or the audit log.
    text = await dump_database(desktop)
    for secret in (first["password"], first["ticket"], vv["password"], proxy.password):
        assert secret not in text

    # A revocation ends the epoch: the handed-out password is refused from then on.
    await desktop.dashboard.services.consoles.revoke_for_vm(desktop.vm_id, "reassigned")
    stale = await spice_login(desktop, host, port, first["password"])
    assert stale == LINK_PERMISSION_DENIED


async def test_two_consoles_opened_a_second_apart_both_open_new_channels_later(
    desktop: KvmConsole,
) -> None:
    """A second browser tab, an admin watching or remote-viewer opening USB late: every console
    valid at the same time keeps opening channels while its ticket is valid."""
    ws_url = desktop.dashboard.url.replace("http://", "ws://") + f"/console/ws/{desktop.vm_id}"

    def new_channel(console: dict[str, Any]) -> Any:
        stream = WebSocketStream.open(
            ws_url, cookie=f"kvmvdi_console={console['ticket']}", origin=desktop.dashboard.url
        )
        try:
            return spice_link(stream, console["password"])
        finally:
            stream.close()

    first = await desktop.open()
    assert (await asyncio.to_thread(new_channel, first)).ok
    # A second apart on the real clock: libvirt's passwdValidTo has seconds resolution, so the
    # second console moves the display's own password expiry, which is what is tested.
    await asyncio.sleep(1)
    second = await desktop.open()
    # Both consoles open a new channel after the other one was opened.
    assert (await asyncio.to_thread(new_channel, first)).ok, "the first console broke"
    assert (await asyncio.to_thread(new_channel, second)).ok


async def test_a_direct_spice_client_with_a_handed_out_password_is_cut_off_at_revocation(
    desktop: KvmConsole,
) -> None:
    host, port = await spice_endpoint(desktop)
    for revoke in ("vm", "user"):
        grant = await desktop.open()
        # A client that can route to the hypervisor goes around the gateway with the password.
        direct = await asyncio.to_thread(
            functools.partial(TcpStream.open, host, port, tls=display_tls(desktop))
        )
        try:
            assert (await asyncio.to_thread(spice_link, direct, grant["password"])).ok
            consoles = desktop.dashboard.services.consoles
            if revoke == "vm":
                await consoles.revoke_for_vm(desktop.vm_id, "reassigned")
            else:
                admin_id = await desktop.dashboard.services.db.fetch_val(
                    "SELECT id FROM users WHERE username = 'admin'"
                )
                await consoles.revoke_for_user(int(admin_id), "user_disabled")
            # SPICE itself hangs up on the client: what it sent drains, then the connection closes
            # (a silence of 15 s fails).
            await asyncio.to_thread(functools.partial(direct.read_until_closed, timeout=15))
        finally:
            direct.close()
        assert await spice_login(desktop, host, port, grant["password"]) == LINK_PERMISSION_DENIED


async def dump_database(world: KvmConsole) -> str:
    db = world.dashboard.services.db
    rows = []
    for table in ("console_tickets", "audit_log", "vms", "hypervisors", "users"):
        rows += [repr(dict(r._mapping)) for r in await db.fetch_all(f"SELECT * FROM {table}")]  # noqa: S608
    return "\n".join(rows)


async def test_opening_the_console_of_a_stopped_desktop_says_so(kvm_console: KvmConsole) -> None:
    if await kvm_console.hv.domain_state(DOMAIN) == "running":
        await kvm_console.hv.destroy(DOMAIN)
    response = await kvm_console.admin.post(
        f"/vms/{kvm_console.vm_id}/console", json={}, headers={"Accept": "application/json"}
    )
    assert response.status_code == 409
    assert response.json()["error"] == "vm_not_running"


async def test_opening_a_console_needs_the_csrf_header(desktop: KvmConsole) -> None:
    response = await desktop.admin.http.post(
        f"/vms/{desktop.vm_id}/console",
        data={"csrf_token": desktop.admin.csrf},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 403
    assert "set-cookie" not in response.headers


async def test_a_get_never_mints_a_vv_file(desktop: KvmConsole) -> None:
    """A .vv issues a ticket and sets a SPICE password: only a CSRF-checked POST may do that."""
    db = desktop.dashboard.services.db

    async def issued() -> int:
        return int(await db.fetch_val(sa.select(sa.func.count()).select_from(console_tickets)))

    before = await issued()
    response = await desktop.admin.get(f"/vms/{desktop.vm_id}/console.vv")
    assert response.status_code == 405
    without_token = await desktop.admin.http.post(f"/vms/{desktop.vm_id}/console.vv")
    assert without_token.status_code == 403
    assert await issued() == before, "no ticket was issued"
    assert (await desktop.vv())["type"] == "spice", "the POST works"
    assert await issued() == before + 1


# --- the HTML5 console in Chromium ----------------------------------------------------------------


def login(driver: WebDriver, dashboard: RunningDashboard) -> None:
    driver.get(dashboard.url + "/login")
    driver.find_element(By.ID, "username").send_keys("admin")
    driver.find_element(By.ID, "password").send_keys(dashboard.admin_password)
    driver.find_element(By.ID, "login-submit").click()
    wait_until(driver, lambda: "/login" not in driver.current_url)


CANVAS_PNG = """
const canvas = document.querySelector('#spice-screen canvas');
if (!canvas || canvas.width < 100) return null;
return canvas.toDataURL('image/png');
"""


def canvas_screen(driver: WebDriver) -> guests.Screen | None:
    data = driver.execute_script(CANVAS_PNG)
    if not data:
        return None
    return guests.decode_image(base64.b64decode(data.split(",", 1)[1]))


def shows_banner(screen: guests.Screen | None) -> bool:
    """The banner guest's screen: mostly blue, with the 16-colour palette stripe on row 0."""
    if screen is None or (screen.width, screen.height) != guests.TEXT_SCREEN_SIZE:
        return False
    if screen.fraction(guests.BLUE) < 0.6:
        return False
    y = guests.STRIPE_HEIGHT // 2
    for index, colour in enumerate(guests.PALETTE):
        x = index * guests.STRIPE_WIDTH + guests.STRIPE_WIDTH // 2
        if any(abs(a - b) > 16 for a, b in zip(screen.pixel(x, y), colour, strict=True)):
            return False
    return True


def status(driver: WebDriver) -> tuple[str, str]:
    element = driver.find_element(By.ID, "console-status")
    return str(element.get_attribute("data-state")), element.text


@contextlib.contextmanager
def capture_on_hypervisor(world: KvmConsole, run_dir: RunDir, path: Path) -> Iterator[PacketCapture]:
    """What an observer between the dashboard and the hypervisor records (tcpdump in h1's namespace)."""
    assert world.host.net is not None
    with PacketCapture(world.host.net, path, run_id=run_dir.id) as capture:
        yield capture


def assert_no_spice_in_clear(capture: PacketCapture, password: str) -> None:
    data = capture.data()
    assert len(data) > 20_000, f"the capture holds the console session: {capture.summary()}"
    assert b"\x17\x03\x03" in data, "TLS application data records"
    assert b"REDQ" not in data, "SPICE's link magic crossed the network in clear"
    assert password.encode() not in data


async def session_record(world: KvmConsole, ticket_id: int) -> dict[str, Any] | None:
    """The details of the audit record of the console session opened with ``ticket_id``, once written."""
    records = await world.dashboard.services.audit.recent(action="console.session")
    return next((r["details"] for r in records if r["details"]["ticket_id"] == ticket_id), None)


async def test_the_html5_console_shows_the_desktop_and_says_when_it_stops(
    desktop: KvmConsole, browser: BrowserFactory, run_dir: RunDir, tmp_path: Path
) -> None:
    driver = await asyncio.to_thread(browser.new, width=1024, height=700)
    try:
        await asyncio.to_thread(login, driver, desktop.dashboard)
        with capture_on_hypervisor(desktop, run_dir, tmp_path / "html5.pcap") as capture:
            await asyncio.to_thread(driver.get, desktop.dashboard.url + f"/vms/{desktop.vm_id}/console")
            await asyncio.to_thread(wait_until, driver, lambda: status(driver)[0] == "connected")
            # The canvas pixels are the guest's: blue, palette stripe and all (read back from the page).
            screen = await asyncio.to_thread(
                wait_until, driver, lambda: (s := canvas_screen(driver)) and shows_banner(s) and s
            )
        assert isinstance(screen, guests.Screen) and screen.fraction(guests.BLUE) > 0.6
        epoch = await desktop.dashboard.services.consoles.epochs.current(desktop.vm_id)
        assert epoch is not None
        assert_no_spice_in_clear(capture, epoch.password)
        # Several SPICE channels, one console session.
        sessions = desktop.dashboard.services.consoles.sessions.sessions()
        assert len(sessions) == 1
        assert sessions[0].connections >= 3
        ticket_id = sessions[0].ticket.id

        # Ctrl+Alt+Del reaches the inputs channel (the page reports it sent it). The page may show
        # the desktop before the inputs channel has linked: until then it sends nothing and says so.
        sent = await asyncio.to_thread(
            wait_until,
            driver,
            lambda: driver.execute_script("return window.kvmvdiConsole.sendCombo('ctrl-alt-del')"),
        )
        assert sent is True

        # Stopping the desktop: the page says so (no prompt, no endless reconnects).
        await desktop.hv.destroy(DOMAIN)
        await asyncio.to_thread(wait_until, driver, lambda: status(driver)[0] == "stopped")
        title = await asyncio.to_thread(lambda: driver.find_element(By.ID, "overlay-title").text)
        assert title == "Desktop stopped"
        # The session's record is written as its last channel closes, just after the page was told.
        session = await eventually(lambda: session_record(desktop, ticket_id), "the console's audit record")
        assert session["via"] == "websocket"
        assert session["end_reason"] == "vm_stopped"
        assert session["bytes_to_client"] > 0

        # Start it again: "Reconnect" fetches a fresh ticket and password and shows the desktop.
        await desktop.ensure_running()
        await asyncio.to_thread(lambda: driver.find_element(By.ID, "overlay-reconnect").click())
        await asyncio.to_thread(wait_until, driver, lambda: status(driver)[0] == "connected")
        await asyncio.to_thread(wait_until, driver, lambda: shows_banner(canvas_screen(driver)))
    finally:
        await asyncio.to_thread(browser.quit, driver)


def open_console_ticket(world: KvmConsole) -> int:
    """The ticket of the newest console session with open channels (one whose display hung up may
    still be finding out why before it ends)."""
    return max(s.ticket.id for s in world.dashboard.services.consoles.sessions.sessions() if s.channels)


async def test_the_html5_console_reconnects_by_itself_after_the_connection_drops(
    desktop: KvmConsole, browser: BrowserFactory
) -> None:
    driver = await asyncio.to_thread(browser.new, width=1024, height=700)
    try:
        await asyncio.to_thread(login, driver, desktop.dashboard)
        await asyncio.to_thread(driver.get, desktop.dashboard.url + f"/vms/{desktop.vm_id}/console")
        await asyncio.to_thread(wait_until, driver, lambda: status(driver)[0] == "connected")
        first = open_console_ticket(desktop)
        # The network drops: the browser's websockets die without a close frame.
        for connection in list(desktop.dashboard.server.server_state.connections):
            if isinstance(connection, DashboardWebSocketProtocol):
                connection.transport.abort()
        await asyncio.to_thread(
            wait_until, driver, lambda: status(driver)[0] in ("reconnecting", "connecting")
        )
        await asyncio.to_thread(wait_until, driver, lambda: status(driver)[0] == "connected")
        await asyncio.to_thread(wait_until, driver, lambda: shows_banner(canvas_screen(driver)))
        second = open_console_ticket(desktop)
        assert second != first, "a reconnect uses a fresh ticket"
    finally:
        await asyncio.to_thread(browser.quit, driver)


# --- remote-viewer through the CONNECT gateway ---------------------------------------------------


async def show_in_remote_viewer(
    world: KvmConsole, vv: Path, xvfb: Xvfb, run_dir: RunDir, tmp_path: Path
) -> None:
    """remote-viewer opens ``vv`` and shows the banner; its session went through the gateway."""
    log = tmp_path / "remote-viewer.log"
    viewer = spawn(["remote-viewer", "--debug", str(vv)], run_id=run_dir.id, log_path=log, env=xvfb.env)
    try:

        def viewer_shows_banner() -> bool:
            screen = guests.load_image(xvfb.screenshot(tmp_path / "screen.png"))
            present = sum(1 for colour in guests.PALETTE if screen.fraction(colour, step=2) > 0.0005)
            return screen.fraction(guests.BLUE) > 0.4 and present >= 12

        async def shown() -> bool:
            assert viewer.poll() is None, log.read_text()[-3000:]
            return await asyncio.to_thread(viewer_shows_banner)

        await eventually(shown, "the banner in remote-viewer", timeout=90, interval=0.5)
        assert not vv.exists(), "delete-this-file=1: remote-viewer removed the .vv file"
        sessions = world.dashboard.services.consoles.sessions.sessions()
        assert [s.via for s in sessions] == ["gateway"]
    finally:
        stop_process(viewer, timeout=10)


async def test_remote_viewer_opens_the_vv_file_through_the_gateway(
    desktop: KvmConsole, xvfb: Xvfb, run_dir: RunDir, tmp_path: Path
) -> None:
    response = await desktop.admin.post(f"/vms/{desktop.vm_id}/console.vv?fullscreen=1")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-virt-viewer"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-disposition"] == f'attachment; filename="{DOMAIN}.vv"'
    vv = tmp_path / "console.vv"
    vv.write_text(response.text)
    password = next(line for line in response.text.splitlines() if line.startswith("password="))[9:]
    with capture_on_hypervisor(desktop, run_dir, tmp_path / "remote-viewer.pcap") as capture:
        await show_in_remote_viewer(desktop, vv, xvfb, run_dir, tmp_path)
    # Through the gateway too, the TLS session runs between remote-viewer and qemu.
    assert_no_spice_in_clear(capture, password)

    async def audited() -> list[Any]:
        records = await desktop.dashboard.services.audit.recent(action="console.session")
        return records if records and records[0]["details"]["via"] == "gateway" else []

    records = await eventually(audited, "the console session's audit record")
    details = records[0]["details"]
    assert details["via"] == "gateway"
    assert details["channels"] >= 3, "remote-viewer's SPICE channels all went through the gateway"
    assert details["bytes_to_client"] > 0 and details["bytes_to_vm"] > 0
