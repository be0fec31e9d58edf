"""Two consoles of two users, for the failover tests and bench/cluster.py: one desktop in an
HTML5 console in headless Chromium (the client portal), another in remote-viewer started by
the thin-client launcher (kiosk mode) on Xvfb, both through HAProxy."""

from __future__ import annotations

import asyncio
import gc
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from kvm_vdi_client.api import BrokerClient
from kvm_vdi_client.config import DashboardConfig, ViewerConfig
from kvm_vdi_client.controller import Controller
from kvm_vdi_client.events import Phase
from kvm_vdi_client.machine import SessionMachine
from selenium.webdriver.chrome.webdriver import WebDriver

from tests.broker.portal_steps import WATCH_CANVAS, portal_login
from tests.broker.records import CLIENT_PASSWORD
from tests.cluster.desktops import ClusterDesktops, ready_desktop, release
from tests.cluster.lab import ClusterLab
from tests.services import guests
from tests.services.guests import load_image
from tests.services.xvfb import Xvfb
from tests.thin_client.banner import shows_banner_guest
from tests.thin_client.launcher_ui import Ui


@dataclass
class TwoConsoles:
    """One user's desktop in a browser (HTML5 console), another's in remote-viewer (launcher)."""

    cluster: ClusterLab
    driver: WebDriver
    ui: Ui
    xvfb: Xvfb
    shots: Path
    pool_id: int
    browser_user: str
    browser_lease: dict[str, Any]
    launcher_user: str

    @property
    def launcher_lease(self) -> str:
        lease = self.ui.controller.machine.lease
        assert lease is not None
        return lease.id

    def holders(self) -> dict[str, str]:
        """Which running replica carries each console now ("websocket" and "gateway"), from the census
        (a killed replica's entries stay until they expire: they are not looked at)."""
        client = redis.Redis.from_url(self.cluster.redis.url)
        found: dict[str, str] = {}
        try:
            for replica in (r for r in self.cluster.replicas if r.running):
                for raw in client.hgetall(f"kvmvdi:consoles:{replica.name}").values():
                    session = json.loads(raw)
                    if session["username"] in (self.browser_user, self.launcher_user):
                        found[session["via"]] = replica.name
        finally:
            client.close()
        return found

    def browser_shows_banner(self, timeout: float = 120) -> None:
        """Wait until the console page draws the banner guest again (a fresh canvas)."""
        self.driver.set_script_timeout(timeout)
        self.driver.execute_async_script(
            WATCH_CANVAS,
            [list(colour) for colour in guests.PALETTE],
            guests.STRIPE_WIDTH,
            guests.STRIPE_HEIGHT,
        )

    def browser_state(self) -> str:
        return str(
            self.driver.execute_script("return document.getElementById('console-status').dataset.state")
        )

    async def viewer_shows_banner(self, name: str, limit: float = 120) -> None:
        async with asyncio.timeout(limit):
            while True:
                await self.ui.settle_async(0.5)
                if self.ui.controller.machine.phase is Phase.VIEWING:
                    screen = load_image(await asyncio.to_thread(self.xvfb.screenshot, self.shots / name))
                    if shows_banner_guest(screen):
                        return

    def first_frame_ms(self, timeout: float = 120) -> float:
        """Wait for the banner on a fresh canvas; when its first SPICE frame came (browser clock, ms)."""
        self.driver.set_script_timeout(timeout)
        first, _banner = self.driver.execute_async_script(
            WATCH_CANVAS,
            [list(colour) for colour in guests.PALETTE],
            guests.STRIPE_WIDTH,
            guests.STRIPE_HEIGHT,
        )
        return float(first)


async def open_two_consoles(
    cluster: ClusterLab,
    desktops: ClusterDesktops,
    driver: WebDriver,
    xvfb: Xvfb,
    shots: Path,
    users: tuple[int, int],
) -> TwoConsoles:
    """Connect both (the desktops ready first); the caller closes them with :func:`close_two_consoles`."""
    browser_user, launcher_user = desktops.users[users[0]], desktops.users[users[1]]
    lease = await ready_desktop(cluster.url, browser_user, desktops.pool_id)
    client = BrokerClient(DashboardConfig(url=cluster.url, timeout=30))
    controller = Controller(SessionMachine(), client, ViewerConfig(kiosk=True), viewer_env=xvfb.env)
    ui = Ui(xvfb, controller)
    consoles = TwoConsoles(
        cluster, driver, ui, xvfb, shots, desktops.pool_id, browser_user, lease, launcher_user
    )
    await asyncio.to_thread(portal_login, driver, cluster.url, browser_user, CLIENT_PASSWORD)
    console_page = f"{cluster.url}/client/desktops/{lease['desktop']['vm_id']}/console"
    await asyncio.to_thread(driver.get, console_page)
    await asyncio.to_thread(consoles.browser_shows_banner)
    # The launcher user logs in with the keyboard and connects to the pool.
    await ui.type_async(launcher_user)
    await ui.keys_async("Tab")
    await ui.type_async(CLIENT_PASSWORD)
    await ui.keys_async("Return")
    await ui.until_async(lambda: bool(ui.window.pool_tree.get_children()), "pool list shown")
    await ui.keys_async("Return")
    await consoles.viewer_shows_banner("first.png")
    return consoles


async def close_two_consoles(consoles: TwoConsoles) -> None:
    await asyncio.to_thread(consoles.ui.controller.close)
    consoles.ui.close()
    gc.collect()
    await release(consoles.cluster.url, consoles.browser_user, consoles.browser_lease["lease"]["id"])
