"""Consoles survive a replica's death and a rolling restart: an HTML5 console in a browser and
remote-viewer from the thin-client launcher come back on screen through another replica, with
no admin action, and the users keep their leases; a rolling restart of every replica fails no
HTTP request through HAProxy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from tests.cluster.consoles import TwoConsoles, close_two_consoles, open_two_consoles
from tests.cluster.desktops import ClusterDesktops, api_login, ready_desktop
from tests.cluster.lab import ClusterLab, Replica
from tests.cluster.waiting import until
from tests.services.browser import BrowserFactory
from tests.services.xvfb import Xvfb

pytestmark = [pytest.mark.cluster, pytest.mark.kvm, pytest.mark.browser, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
async def two_consoles(
    cluster_lab: ClusterLab,
    cluster_desktops: ClusterDesktops,
    browser: BrowserFactory,
    xvfb: Xvfb,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[TwoConsoles]:
    cluster_lab.heal()
    driver = browser.new()
    try:
        consoles = await open_two_consoles(
            cluster_lab, cluster_desktops, driver, xvfb, tmp_path_factory.mktemp("shots"), (4, 5)
        )
        try:
            yield consoles
        finally:
            await close_two_consoles(consoles)
    finally:
        driver.quit()


async def test_killing_the_replicas_that_hold_two_consoles_brings_both_back_through_another(
    two_consoles: TwoConsoles,
) -> None:
    consoles = two_consoles
    cluster = consoles.cluster

    def both_held() -> dict[str, str] | None:
        holders = consoles.holders()
        return holders if len(holders) == 2 else None

    holders = await until(both_held, "both consoles counted")
    browser_lease = consoles.browser_lease["lease"]["id"]
    launcher_lease = consoles.launcher_lease
    first_viewer = consoles.ui.controller.viewer
    for name in set(holders.values()):
        cluster.replica(name).kill()
    # The console page notices, reconnects through HAProxy, and shows the desktop again.
    await until(lambda: consoles.browser_state() != "connected", "the console page noticed")
    await asyncio.to_thread(consoles.browser_shows_banner)
    # The launcher sees remote-viewer quit, finds the desktop still running, starts it again.
    await consoles.ui.until_async(
        lambda: consoles.ui.controller.viewer is not first_viewer, "a new viewer", limit=120
    )
    await consoles.viewer_shows_banner("after-kill.png")
    after = await until(both_held, "both consoles again")
    assert not set(after.values()) & set(holders.values()), "the consoles moved to a living replica"
    # Nobody lost a lease.
    assert consoles.launcher_lease == launcher_lease
    again = await ready_desktop(cluster.url, consoles.browser_user, consoles.pool_id)
    assert again["lease"]["id"] == browser_lease


@dataclass
class Load:
    """HTTP traffic through HAProxy while replicas restart: pages, the broker API, heartbeats."""

    base_url: str
    username: str
    lease_id: int
    done: int = 0
    failures: list[str] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        self.failures = []
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as http:
            headers = await api_login(http, self.username)
            while not stop.is_set():
                for method, path in (
                    ("GET", "/client/login"),
                    ("GET", "/api/v1/pools"),
                    ("POST", f"/api/v1/leases/{self.lease_id}/heartbeat"),
                ):
                    try:
                        response = await http.request(method, path, headers=headers)
                        if response.status_code >= 400:
                            self.failures.append(f"{method} {path}: {response.status_code}")
                    except httpx.HTTPError as exc:
                        self.failures.append(f"{method} {path}: {exc!r}")
                    self.done += 1


async def test_a_rolling_restart_fails_no_request_and_every_console_comes_back(
    two_consoles: TwoConsoles,
) -> None:
    consoles = two_consoles
    cluster = consoles.cluster
    cluster.heal()
    loads = [
        Load(cluster.url, consoles.browser_user, consoles.browser_lease["lease"]["id"]) for _ in range(3)
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(load.run(stop)) for load in loads]
    try:
        for replica in cluster.replicas:
            await restart(cluster, replica)
            # Every console is on screen again before the next replica goes.
            await asyncio.to_thread(consoles.browser_shows_banner)
            await consoles.viewer_shows_banner(f"after-{replica.name}.png")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert sum(load.done for load in loads) > 100
    assert [failure for load in loads for failure in load.failures or []] == []


async def restart(cluster: ClusterLab, replica: Replica) -> None:
    """A rolling restart of one replica: SIGTERM (it drains and stops), start, wait until balanced."""
    replica.terminate()
    code = await asyncio.to_thread(replica.wait_exit, 90)
    assert code in (0, -15), f"{replica.name} exited with {code}\n{replica.log()}"
    replica.start()
    await asyncio.to_thread(replica.wait_ready)
    await asyncio.to_thread(cluster.wait_balanced)
